"""Hot reload: load the ``current`` bundle beside the serving Runtime, warm it, swap it in.

Models.Reload and SIGHUP both call ``Reloader.reload``. Requests keep running on the old
Runtime while the new one loads. Each request holds a lease on the Runtime it started with, and
a replaced Runtime is closed when its last lease ends. A failed load leaves the old Runtime
serving, records the reason for GetInfo and raises FailedPreconditionError, because a retry
cannot succeed before the bundle on disk is fixed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from prefrank.config import ServerConfig
from prefrank.errors import FailedPreconditionError, PrefrankError, UnavailableError
from prefrank.reloading import mark_active_store, sync_documents
from prefrank.runtime import Runtime, load_runtime
from prefrank.server.servicer import ServiceState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadOutcome:
    """Bundle versions before and after a successful reload, and the seconds it took."""

    previous_bundle_version: str
    bundle_version: str
    seconds: float


class Reloader:
    """Replaces the serving Runtime with one loaded from the ``current`` bundle; one reload at a time.

    Args:
        config: Service settings; ``models_dir`` must be set.
        state: The state the servicers read the Runtime from.
    """

    def __init__(self, config: ServerConfig, state: ServiceState) -> None:
        self._config = config
        self._state = state
        self._lock = threading.Lock()

    def reload(self) -> ReloadOutcome:
        """Load, warm and swap in the ``current`` bundle. A second caller waits for a running reload.

        Raises:
            FailedPreconditionError: models_dir is not set, or the bundle did not load; the old
                Runtime keeps serving.
            UnavailableError: the server has not finished starting.
        """
        if not self._config.models_dir:
            raise FailedPreconditionError(
                "reload needs a models directory with a 'current' bundle; start the server with "
                "models_dir (PREFRANK_MODELS_DIR) set"
            )
        with self._lock:
            old = self._state.runtime
            if old is None:
                raise UnavailableError(
                    "reload is possible only once the server is serving; watch grpc.health.v1.Health"
                )
            started = time.perf_counter()
            logger.info("Reloading: serving bundle %s, loading the 'current' bundle of %s",
                        old.bundle_version or "(none)", self._config.models_dir)

            # Load and warm beside the serving Runtime
            try:
                new = load_runtime(self._config, previous=old)
            except PrefrankError as err:
                raise self._failed(old, err.message) from err
            except Exception as err:  # noqa: BLE001 - any loader failure must leave the old Runtime serving
                logger.exception("Reload crashed while loading")
                raise self._failed(old, f"{type(err).__name__}: {err}") from err

            # Copy index writes that arrived during the load, then swap while writes wait
            try:
                with self._state.writes_paused():
                    if new.index is not old.index:
                        sync_documents(old.index.iter_documents(), new.index)
                    mark_active_store(new.config, new.index)
                    if new.index is old.index:
                        old.owns_index = False
                    self._state.swap(new)
            except Exception as err:  # noqa: BLE001 - the old Runtime must keep serving whatever failed
                logger.exception("Reload failed while swapping")
                _close(new, keep_index=new.index is old.index)
                reason = err.message if isinstance(err, PrefrankError) else f"{type(err).__name__}: {err}"
                raise self._failed(old, reason) from err

            seconds = time.perf_counter() - started
            self._state.set_reload_error("")
            logger.info("Reloaded in %.1f s: bundle %s replaced %s", seconds,
                        new.bundle_version or "(none)", old.bundle_version or "(none)")
            return ReloadOutcome(old.bundle_version, new.bundle_version, seconds)

    def reload_logged(self) -> None:
        """Run reload and log a failure instead of raising it, for SIGHUP, which has no caller to receive it."""
        try:
            self.reload()
        except PrefrankError as err:
            logger.error("SIGHUP reload failed: %s", err.message)

    def _failed(self, old: Runtime, reason: str) -> FailedPreconditionError:
        self._state.set_reload_error(reason)
        version = old.bundle_version or "(none)"
        logger.error("Reload failed; still serving bundle %s: %s", version, reason)
        return FailedPreconditionError(
            f"reload failed, still serving bundle {version}: {reason}; fix the bundle that "
            f"{self._config.models_dir}/current points to and reload again"
        )


def _close(runtime: Runtime, keep_index: bool) -> None:
    if keep_index:
        runtime.owns_index = False
    try:
        runtime.close()
    except Exception:  # noqa: BLE001 - cleanup of a Runtime that never served
        logger.exception("Closing the unused Runtime failed")
