"""The environment and logging every worker gets, set before its interpreter starts."""
from __future__ import annotations

import logging
import os

from distributed.diagnostics.plugin import WorkerPlugin

# numba reads NUMBA_NUM_THREADS once, at import: it must be in the environment before the worker
# interpreter starts (client.run afterwards has no effect). resqpy reads RESQPY_NUMBA_CACHE to
# compile with cache=True; the cache directory must be writable.
DEFAULTS = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "RESQPY_NUMBA_CACHE": "true",
    "NUMBA_CACHE_DIR": "${HOME}/.cache/resqmp/numba",
    "HDF5_USE_FILE_LOCKING": "FALSE",
}


def worker_environment(profile, expand: bool = False) -> dict[str, str]:
    """Defaults overridden by the profile's `environment:`. With expand, $VARS are expanded here
    (see expanded_here); otherwise they are left for the worker's shell (job scripts, pods)."""
    env = {**DEFAULTS, **profile.environment}
    return expanded_here(env) if expand else env


def expanded_here(env: dict[str, str]) -> dict[str, str]:
    """$VARS and ~ expanded in this process: for workers started with no shell in between (local
    workers, a warm-up run here)."""
    return {k: os.path.expanduser(os.path.expandvars(v)) for k, v in env.items()}


class LoggingPlugin(WorkerPlugin):
    """Configures logging on every worker, including workers that join later."""

    name = "resqmp-logging"

    def __init__(self, level: str = "INFO", fmt: str | None = None, file: str | None = None):
        self.level = level
        self.fmt = fmt or "%(asctime)s %(levelname)s %(name)s: %(message)s"
        self.file = file

    def setup(self, worker):
        root = logging.getLogger()
        root.setLevel(self.level)
        formatter = logging.Formatter(self.fmt)
        for handler in root.handlers:
            handler.setFormatter(formatter)
        if self.file:
            path = os.path.expanduser(os.path.expandvars(self.file))
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            handler = logging.FileHandler(path)
            handler.setFormatter(formatter)
            handler.set_name("resqmp-file")
            if not any(h.get_name() == "resqmp-file" for h in root.handlers):
                root.addHandler(handler)
        # numba's compiler logs at INFO/DEBUG are noise at scale
        logging.getLogger("numba").setLevel(logging.WARNING)
        logging.getLogger("resqpy").setLevel(self.level)


def logging_plugin(profile) -> LoggingPlugin:
    cfg = profile.logging
    return LoggingPlugin(level=cfg.get("level", "INFO"), fmt=cfg.get("format"), file=cfg.get("file"))
