"""What resqmp runs on a scheduler it did not start travels by value: the scheduler (the `external`
backend's, someone else's) may not have resqmp, or not this version of it. Here a real `dask
scheduler` process in which `import resqmp` fails, and a real worker that has resqmp, as the
workers must. A launcher SIGKILLed after it put its plugins on the workers leaves them on the
scheduler (nobody withdrew them); the next launch must remove them, or the killed run's upload
stays on the workers for ever and refuses every other version of its module."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_fixtures import wait_until
from resqmp import upload
from resqmp.worker_env import LOGGING_PREFIX, register_logging

pytestmark = pytest.mark.timeout(300)

#: a launcher that puts its logging and upload plugins on the workers, as run.py does, and is
#: SIGKILLed before its end: argv[1] the scheduler, argv[2] the module to upload, argv[3] a log file
_KILLED_LAUNCHER = """
import os, signal, sys
from pathlib import Path
from distributed import Client
from resqmp import upload
from resqmp.worker_env import register_logging

class Profile:
    logging = {"level": "INFO", "file": sys.argv[3]}

client = Client(sys.argv[1])
register_logging(client, Profile(), workers_outlive_run=True)
shipment = upload.ship(client, [upload.read(Path(sys.argv[2]))], workers_outlive_run=True)
print(client.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _scheduler_plugins(client) -> list[str]:
    return client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.worker_plugins))


def _scheduler_clients(client) -> list[str]:
    return client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.clients))


def _worker_uploads(client) -> list[dict]:
    """Per worker: upload name -> digest of what is installed there."""
    def active(dask_worker=None) -> dict:
        from resqmp import upload as on_worker
        return {name: installed.digest for name, installed in on_worker._ACTIVE.items()}
    return list(client.run(active).values())


def _module(folder: Path, version: str) -> Path:
    folder.mkdir()
    path = folder / "my_wrappers.py"
    path.write_text(f"VERSION = {version!r}\n")
    return path


def _killed_launcher(address: str, module: Path, log_file: Path) -> str:
    """Runs the killed launcher; its client's id once the scheduler has seen it go."""
    proc = subprocess.run([sys.executable, "-c", _KILLED_LAUNCHER, address, str(module), str(log_file)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def killed(scheduler_without_resqmp, tmp_path):
    """(client, the killed launcher's client id, its module): its plugins are still on the scheduler."""
    address, client = scheduler_without_resqmp
    module = _module(tmp_path / "a", "1")
    gone = _killed_launcher(address, module, tmp_path / "killed.log")
    assert wait_until(lambda: gone not in _scheduler_clients(client), 120), _scheduler_clients(client)
    plugins = _scheduler_plugins(client)
    assert upload.PLUGIN_PREFIX + gone in plugins and LOGGING_PREFIX + gone in plugins, plugins
    assert _worker_uploads(client) == [{"my_wrappers": upload.read(module).digest}]
    return client, gone


def test_the_next_launch_removes_a_killed_launchers_upload_on_a_scheduler_without_resqmp(killed, tmp_path):
    client, gone = killed
    mine = upload.read(_module(tmp_path / "b", "2"))
    # the next launch ships another version of the module: the killed run's plugin must go first
    # (else the worker refuses it: one process holds one version of a module)
    shipment = upload.ship(client, [mine], workers_outlive_run=True)
    assert upload.PLUGIN_PREFIX + gone not in _scheduler_plugins(client)
    assert _worker_uploads(client) == [{"my_wrappers": mine.digest}]
    shipment.withdraw()
    assert not [p for p in _scheduler_plugins(client) if p.startswith(upload.PLUGIN_PREFIX)]
    assert _worker_uploads(client) == [{}]


def test_the_next_launch_removes_a_killed_launchers_logging_on_a_scheduler_without_resqmp(killed, tmp_path):
    client, gone = killed

    class Profile:
        logging = {"level": "INFO", "file": str(tmp_path / "next.log")}

    withdraw = register_logging(client, Profile(), workers_outlive_run=True)
    assert LOGGING_PREFIX + gone not in _scheduler_plugins(client)
    withdraw()
    assert not [p for p in _scheduler_plugins(client) if p.startswith(LOGGING_PREFIX)]
