"""Choose the models a Runtime loads from a bundle, and give each retriever version its own index.

With ``models_dir`` set, every retriever version gets its own index directory,
``<index_dir>/retriever-<version>/``, with its own SQLite store and FAISS snapshot. A new Runtime
whose retriever differs from the serving one fills its directory from the serving store
(``sync_documents``), embedding with the new retriever, while the old Runtime keeps serving and
writing its own directory untouched. The file ``<index_dir>/active-store`` names the directory of
the Runtime that serves. That directory is the store of record, so a process that starts with
another retriever fills its directory from it. Without ``models_dir`` the index lives directly
in ``index_dir``, as it always has.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tqdm.auto import tqdm

from prefrank.artifacts import model_version, resolve_model_dir
from prefrank.bundles import Bundle, current_bundle
from prefrank.config import ServerConfig
from prefrank.errors import ConfigError, ModelLoadError
from prefrank.retrieval.document_store import STORE_FILE, DocumentStore, StoredDocument
from prefrank.retrieval.encoder import BiEncoder, load_bi_encoder
from prefrank.retrieval.index import DocumentIndex
from prefrank.retrieval.vector_index import IndexSpec

logger = logging.getLogger(__name__)

ACTIVE_STORE_FILE = "active-store"
# Documents embedded and written per upsert while filling an index directory.
SYNC_BATCH = 256


@dataclass(frozen=True)
class SyncCounts:
    """Counts of the documents sync_documents changed in the target index."""

    upserted: int
    deleted: int


def resolve_models(config: ServerConfig) -> tuple[ServerConfig, Bundle | None]:
    """Return the config with the bundle's model directories filled in, and the bundle.

    retriever_model and reward_model keep their explicit values; only empty ones take the
    bundle's directories. Without models_dir, or when it has no ``current``, the config is
    returned unchanged with no bundle.

    Raises:
        BundleError: ``current`` points to a missing or invalid bundle.
        FusionFormatError: the bundle's fusion.json is invalid.
    """
    if not config.models_dir:
        return config, None
    bundle = current_bundle(config.models_dir)
    if bundle is None:
        logger.info("No 'current' bundle in %s; loading the configured models", config.models_dir)
        return config, None
    explicit = [name for name in ("retriever_model", "reward_model") if getattr(config, name)]
    if explicit:
        logger.warning(
            "Bundle %s: %s set explicitly and used instead of the bundle's; its fusion weights were fit "
            "for the bundle's models", bundle.version, " and ".join(explicit),
        )
    effective = dataclasses.replace(
        config,
        retriever_model=config.retriever_model or str(bundle.retriever_dir),
        reward_model=config.reward_model or str(bundle.reward_dir),
    )
    return effective, bundle


def load_encoder(config: ServerConfig, path: str, previous: BiEncoder | None = None) -> BiEncoder:
    """Load the retriever at path, or return previous when its weights have the same content version.

    Raises:
        ModelLoadError: the directory does not load.
    """
    if previous is not None:
        try:
            unchanged = model_version(resolve_model_dir(path, "retriever_model")) == previous.description.version
        except ModelLoadError:
            unchanged = False  # load_bi_encoder below reports the problem
        if unchanged:
            logger.info("Retriever %s is unchanged (version %s); reusing the loaded one",
                        path, previous.description.version)
            return previous
    return load_bi_encoder(path, config.device, config.batch_size)


def index_directory(config: ServerConfig, retriever_version: str, bundle: Bundle | None) -> pathlib.Path:
    """Return the index directory for a retriever: per version with a bundle, index_dir without."""
    if bundle is None:
        return config.index_path
    return config.index_path / f"retriever-{retriever_version}"


def active_store(config: ServerConfig) -> pathlib.Path | None:
    """Return the directory named in ``active-store``, or None when the file is absent."""
    marker = config.index_path / ACTIVE_STORE_FILE
    if not marker.is_file():
        return None
    return config.index_path / marker.read_text(encoding="utf-8").strip()


def mark_active_store(config: ServerConfig, index: DocumentIndex) -> None:
    """Record the serving index's directory in ``active-store`` (atomically); a no-op without models_dir."""
    if not config.models_dir:
        return
    root = config.index_path
    relative = os.path.relpath(index.directory.resolve(), root.resolve())
    temporary = root / f".{ACTIVE_STORE_FILE}.tmp-{os.getpid()}"
    temporary.write_text(relative + "\n", encoding="utf-8")
    os.replace(temporary, root / ACTIVE_STORE_FILE)


def open_index(
    config: ServerConfig, encoder: BiEncoder, spec: IndexSpec, bundle: Bundle | None,
    previous: DocumentIndex | None = None,
) -> DocumentIndex:
    """Open the index for encoder's retriever, filled with the documents of the store of record.

    Args:
        previous: The serving Runtime's index during a reload. It is returned as is when it was
            built by the same retriever version; otherwise it is the source of the documents.

    Raises:
        ConfigError: a reload changes the retriever without models_dir, where both would share
            one index directory.
        IndexCorruptError: a store does not open.
    """
    version = encoder.description.version
    if previous is not None and previous.retriever_version == version:
        return previous
    directory = index_directory(config, version, bundle)
    if previous is not None and previous.directory.resolve() == directory.resolve():
        raise ConfigError(
            f"the retriever changed to version {version}, but its index directory {directory} is the "
            "serving one; set models_dir so that each retriever version gets its own index directory"
        )
    index = DocumentIndex(directory, encoder, spec)
    if not config.models_dir:
        return index
    try:
        if previous is not None:
            sync_documents(previous.iter_documents(), index)
        else:
            source = _startup_source(config, directory)
            if source is not None:
                store = DocumentStore(source)
                try:
                    logger.info("Filling index %s from the store of record %s", directory, source)
                    sync_documents(store.iter_contents(), index)
                finally:
                    store.close()
    except BaseException:
        index.close()
        raise
    return index


def _startup_source(config: ServerConfig, target: pathlib.Path) -> pathlib.Path | None:
    """Return the store the serving index was last filled from, when it is not target itself."""
    source = active_store(config)
    if source is None and (config.index_path / STORE_FILE).is_file():
        source = config.index_path  # a store written before bundles were used
    if source is None or source.resolve() == target.resolve() or not (source / STORE_FILE).is_file():
        return None
    return source


def _fingerprint(document: StoredDocument) -> tuple[str, str, str]:
    return document.title, document.text, json.dumps(document.metadata, sort_keys=True, ensure_ascii=False)


def sync_documents(source: Iterable[list[StoredDocument]], target: DocumentIndex) -> SyncCounts:
    """Make target hold exactly the source's documents, embedding only new or changed ones.

    Documents are compared by id, title, text and metadata. Target embeds what it upserts with
    its own retriever, so the source may come from another retriever version.

    NOTE: every source document is held in memory during the comparison; fine for the
    hundred-thousand-document range, not for stores much larger than RAM.
    """
    wanted: dict[str, StoredDocument] = {}
    for batch in source:
        wanted.update((d.doc_id, d) for d in batch)
    present: dict[str, tuple[str, str, str]] = {}
    for batch in target.iter_documents():
        present.update((d.doc_id, _fingerprint(d)) for d in batch)

    changed = [d for doc_id, d in wanted.items() if present.get(doc_id) != _fingerprint(d)]
    removed = [doc_id for doc_id in present if doc_id not in wanted]
    if changed:
        with tqdm(total=len(changed), desc=f"embedding into {target.directory.name}", unit="doc") as progress:
            for chunk in _chunks(changed, SYNC_BATCH):
                target.upsert([
                    {"id": d.doc_id, "text": d.text, "title": d.title, "metadata": d.metadata} for d in chunk
                ])
                progress.update(len(chunk))
    if removed:
        target.delete(removed)
    if changed or removed:
        logger.info("Synchronised %s: %d documents embedded, %d deleted", target.directory, len(changed), len(removed))
    return SyncCounts(len(changed), len(removed))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
