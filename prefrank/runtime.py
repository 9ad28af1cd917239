"""Load the models and the index a service or batch scorer needs, and warm them up."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from prefrank.artifacts import bundled_retriever_path
from prefrank.bundles import Bundle
from prefrank.config import ServerConfig
from prefrank.errors import ConfigError
from prefrank.ranking import Candidate, Ranker
from prefrank.reloading import load_encoder, open_index, resolve_models
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
    #: The model bundle the models came from; None without models_dir or a 'current' bundle.
    bundle: Bundle | None = None
    #: False once a reloaded Runtime with the same retriever took over this index; close() then leaves it open.
    owns_index: bool = True

    @property
    def reward(self) -> Scorer | None:
        return None if isinstance(self.scorer, CosineScorer) else self.scorer

    @property
    def bundle_version(self) -> str:
        return self.bundle.version if self.bundle is not None else ""

    def close(self) -> None:
        if self.owns_index:
            self.index.close()
        self.scorer.close()


def load_scorer(config: ServerConfig, encoder: BiEncoder) -> tuple[Scorer, str]:
    """Return the configured scorer and the reason it was chosen."""
    if not config.reward_model:
        return CosineScorer(encoder), "no reward model configured (set PREFRANK_REWARD_MODEL or --reward-model)"
    from prefrank.batching import BatcherConfig
    from prefrank.scoring.cross_encoder import CrossEncoderScorer

    batcher = BatcherConfig(
        max_batch_tokens=config.max_batch_tokens, max_batch_pairs=config.batch_size,
        max_wait_ms=config.max_wait_ms, max_queued_pairs=config.max_queued_pairs,
    )
    scorer = CrossEncoderScorer(config.reward_model, device=config.device, backend=config.backend, batcher=batcher)
    return scorer, f"reward model loaded from {scorer.description.path}"


def load_ranker(config: ServerConfig) -> Ranker:
    """Load the retriever and the scorer into a rerank-only Ranker (no index) and warm it up.

    The batch scorer uses this: it never searches, so it needs no FAISS index or data directory.

    Raises:
        ModelLoadError: a model directory does not load.
    """
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    config, bundle = resolve_models(config)
    retriever_path = config.retriever_model or str(bundled_retriever_path())
    encoder = load_bi_encoder(retriever_path, config.device, config.batch_size)
    scorer, reason = load_scorer(config, encoder)
    ranker = Ranker(
        config, encoder, scorer, index=None, fusion=bundle.fusion if bundle else None,
        bundle_version=bundle.version if bundle else "",
    )
    ranker.rerank("warm-up query", [Candidate(id="warm-up", text="warm-up document")])
    logger.info("Ranker ready without an index: scorer %s (%s)", scorer.kind, reason)
    return ranker


def load_runtime(config: ServerConfig, previous: Runtime | None = None) -> Runtime:
    """Load the retriever, the scorer and the index, then run one request through each.

    With models_dir set, the models and the score fusion come from its ``current`` bundle
    (explicit retriever_model and reward_model settings win) and the index lives in a directory
    per retriever version (see prefrank.reloading).

    Args:
        previous: The serving Runtime during a reload. Its retriever and index are reused when
            the retriever is unchanged; otherwise its documents fill the new retriever's index.
            It keeps serving meanwhile and is never modified here.

    Raises:
        BundleError: the ``current`` bundle is missing parts or has an invalid manifest.
        ModelLoadError: a model directory does not load.
        IndexCorruptError: the index does not load and cannot be rebuilt.
        ConfigError: the settings are inconsistent with the loaded models.
    """
    started = time.perf_counter()
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)

    # Load models
    config, bundle = resolve_models(config)
    retriever_path = config.retriever_model or str(bundled_retriever_path())
    encoder = load_encoder(config, retriever_path, previous.encoder if previous else None)
    scorer, reason = load_scorer(config, encoder)

    # Open the index
    spec = IndexSpec(
        dimension=encoder.dimension, index_type=config.index_type, hnsw_m=config.hnsw_m,
        hnsw_ef_construction=config.hnsw_ef_construction, hnsw_ef_search=config.hnsw_ef_search,
    )
    if not config.index_dir:
        raise ConfigError("index_dir must not be empty")
    try:
        index = open_index(config, encoder, spec, bundle, previous.index if previous else None)
    except BaseException:
        scorer.close()
        raise
    shared_index = previous is not None and index is previous.index
    try:
        ranker = Ranker(
            config, encoder, scorer, index, fusion=bundle.fusion if bundle else None,
            bundle_version=bundle.version if bundle else "",
        )
        # Warm up: the first forward pass allocates buffers and is several times slower than later ones.
        ranker.rerank("warm-up query", [Candidate(id="warm-up", text="warm-up document")], return_components=True)
        encoder.encode(["warm-up query"])
    except BaseException:
        scorer.close()
        if not shared_index:
            index.close()
        raise
    logger.info("Runtime ready in %.1f s: scorer %s, bundle %s, %d documents indexed",
                time.perf_counter() - started, ranker.scorer_name, bundle.version if bundle else "(none)",
                index.count())
    return Runtime(config, encoder, scorer, reason, index, ranker, bundle=bundle)
