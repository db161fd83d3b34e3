"""TLS between the launcher's scheduler, its workers and its client.

Batch-scheduler backends (dask-jobqueue) use TLS by default: a temporary certificate and key,
new for each run, in a fresh owner-only folder of the shared directory (the workers read them
there), removed when the cluster closes. Only the owner can read them, so only the owner's
processes can join the cluster or submit work to it. A profile may instead give the file names of
site-issued certificates (`security:` as distributed.Security options), or turn TLS off.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

from distributed.security import Security

from resqmp.errors import ClusterError, ProfileError
from resqmp.outputs import create_new
from resqmp.paths import expand

TLS_PREFIX = ".resqmp-tls-"
RENDER_TLS_DIR = TLS_PREFIX + "<run>"       # what `profiles render` shows for the run's folder
FILES = ("ca.pem", "cert.pem", "key.pem")


def write_tls_files(shared: str) -> str:
    """A fresh folder (mode 700) in `shared` with the cluster's temporary certificate (ca.pem =
    cert.pem, self-signed) and key (mode 600)."""
    try:
        tls_dir = tempfile.mkdtemp(prefix=TLS_PREFIX, dir=shared)
    except OSError as e:
        raise ClusterError(f"shared directory {shared}: cannot create the TLS folder ({e.strerror})") from None
    os.chmod(tls_dir, 0o700)
    sec = Security.temporary()
    cert, key = sec.tls_ca_file, sec.tls_worker_key
    for name, text in zip(FILES, (cert, cert, key)):
        fd = create_new(os.path.join(tls_dir, name), 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return tls_dir


def _expanded_files(setting: dict, key: str) -> dict:
    """Certificate and key file names go through the launcher's one path rule."""
    return {k: expand(str(v), f"{key}.{k}") if k.startswith("tls_") and isinstance(v, str) else v
            for k, v in setting.items()}


def security_for(setting: Any, tls_dir: str | None) -> Security | None:
    """`cluster.security`: true -> the temporary certificate in tls_dir; false -> plain TCP;
    a mapping -> distributed.Security keyword arguments (site-issued certificate files)."""
    if setting is False or setting is None:
        return None
    if isinstance(setting, dict):
        try:
            return Security(**{"require_encryption": True, **_expanded_files(setting, "cluster.security")})
        except TypeError as e:
            raise ProfileError(f"cluster.security: {e}") from None
    if setting is not True:
        raise ProfileError(f"cluster.security: expected true, false or a mapping of distributed.Security "
                           f"options, got {setting!r}")
    ca, cert, key = (os.path.join(tls_dir, n) for n in FILES)
    return Security(tls_ca_file=ca, require_encryption=True,
                    tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key,
                    tls_worker_cert=cert, tls_worker_key=key)


_CLIENT_KEYS = ("tls_ca_file", "tls_client_cert", "tls_client_key")


def client_security(setting: dict | None) -> Security | None:
    """A client's `security:` (external backend): site-issued certificate files."""
    setting = setting or {}
    if not isinstance(setting, dict):
        raise ProfileError(f"cluster.security: expected a mapping of {', '.join(_CLIENT_KEYS)}, got {setting!r}")
    unknown = set(setting) - set(_CLIENT_KEYS) - {"require_encryption"}
    if unknown:
        raise ProfileError(f"cluster.security: unknown key {sorted(unknown)[0]} "
                           f"(expected {', '.join(_CLIENT_KEYS)}, require_encryption)")
    if not setting:
        return None
    files = _expanded_files({k: v for k, v in setting.items() if k in _CLIENT_KEYS}, "cluster.security")
    return Security(**files, require_encryption=bool(setting.get("require_encryption", True)))
