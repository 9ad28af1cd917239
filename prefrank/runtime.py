"""Load the models and the index a service or batch scorer needs, and warm them up."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from prefrank.artifacts import bundled_retriever_path
from prefrank.config import ServerConfig
from prefrank.errors import ConfigError
from prefrank.ranking import Candidate, Ranker
from prefrank.retrieval.encoder import BiEncoder, load_bi_encoder
from prefrank.retrieval.index import DocumentIndex
from prefrank.retrieval.vector_index import IndexSpec
from prefrank.scoring.base import Scorer
from prefrank.scoring.cosine import CosineScorer

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a request needs, loaded and warmed."""

    config: ServerConfig
    encoder: BiEncoder
    scorer: Scorer
    scorer_reason: str
    index: DocumentIndex
    ranker: Ranker

    @property
    def reward(self) -> Scorer | None:
        return None if isinstance(self.scorer, CosineScorer) else self.scorer

    def close(self) -> None:
        self.index.close()


def load_scorer(config: ServerConfig, encoder: BiEncoder) -> tuple[Scorer, str]:
    """Return the configured scorer and the reason it was chosen."""
    if not config.reward_model:
        return CosineScorer(encoder), "no reward model configured (set PREFRANK_REWARD_MODEL or --reward-model)"
    from prefrank.scoring.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(config.reward_model, device=config.device, batch_size=config.batch_size)
    return scorer, f"reward model loaded from {scorer.description.path}"


def load_runtime(config: ServerConfig) -> Runtime:
    """Load the retriever, the scorer and the index, then run one request through each.

    Raises:
        ModelLoadError: a model directory does not load.
        IndexCorruptError: the index does not load and cannot be rebuilt.
        ConfigError: the settings are inconsistent with the loaded models.
    """
    started = time.perf_counter()
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)

    # Load models
    retriever_path = config.retriever_model or str(bundled_retriever_path())
    encoder = load_bi_encoder(retriever_path, config.device, config.batch_size)
    scorer, reason = load_scorer(config, encoder)

    # Open the index
    spec = IndexSpec(
        dimension=encoder.dimension, index_type=config.index_type, hnsw_m=config.hnsw_m,
        hnsw_ef_construction=config.hnsw_ef_construction, hnsw_ef_search=config.hnsw_ef_search,
    )
    if not config.data_dir:
        raise ConfigError("data_dir must not be empty")
    index = DocumentIndex(config.data_path, encoder, spec)
    ranker = Ranker(config, encoder, scorer, index)

    # Warm up: the first forward pass allocates buffers and is several times slower than later ones.
    ranker.rerank("warm-up query", [Candidate(id="warm-up", text="warm-up document")])
    encoder.encode(["warm-up query"])
    logger.info("Runtime ready in %.1f s: scorer %s, %d documents indexed",
                time.perf_counter() - started, scorer.kind, index.count())
    return Runtime(config, encoder, scorer, reason, index, ranker)
