"""TLS on a real SLURM cluster started by the jobqueue backend: the owner's client runs tasks on
TLS workers; a client or worker without the cluster's certificate (none, another certificate,
plain TCP) can neither run a task nor join; the key is readable by the owner only."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from resqmp import profiles
from resqmp.backends import for_profile
from resqmp.worker_env import worker_environment

PROFILE = PROFILES["slurm"]
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]

# Another process trying its luck: connect to ADDRESS with the given security, run a task.
ROGUE_CLIENT = textwrap.dedent("""\
    import sys
    from distributed import Client
    from distributed.security import Security
    address, mode = sys.argv[1], sys.argv[2]
    kwargs = {}
    if mode == "foreign":
        kwargs["security"] = Security.temporary()          # a certificate of its own
    if mode == "tcp":
        address = address.replace("tls://", "tcp://")
    try:
        client = Client(address, timeout=10, **kwargs)
        print("RAN", client.submit(sum, [1, 2]).result(timeout=10))
    except Exception as e:
        print("REFUSED", type(e).__name__, str(e).splitlines()[0][:200])
    """)


@pytest.fixture(scope="module")
def tls_cluster(slurm):
    from distributed import Client
    name = unique("resqmp-tls-")
    p = profiles.load(str(PROFILE), [f"cluster.job_name={name}"])
    cluster = for_profile(p, worker_environment(p)).start()
    client = Client(cluster)
    cluster.scale(1)
    client.wait_for_workers(1, timeout=120)
    yield cluster, client, name
    client.close()
    cluster.close()


def test_owner_client_runs_tasks_on_tls_workers_with_the_worker_environment(tls_cluster):
    cluster, client, _ = tls_cluster
    assert cluster.scheduler_address.startswith("tls://")
    workers = list(client.scheduler_info()["workers"])
    assert len(workers) == 1 and workers[0].startswith("tls://")

    def inside():
        import os
        import numba
        return os.environ.get("NUMBA_NUM_THREADS"), numba.config.NUMBA_NUM_THREADS

    assert client.submit(inside, pure=False).result(timeout=60) == ("1", 1)
    assert cluster.security.require_encryption


@pytest.mark.parametrize("mode", ["none", "foreign", "tcp"])
def test_client_without_the_cluster_certificate_cannot_run_a_task(tls_cluster, mode):
    cluster, client, _ = tls_cluster
    proc = subprocess.run([sys.executable, "-c", ROGUE_CLIENT, cluster.scheduler_address, mode],
                          capture_output=True, text=True, timeout=90)
    assert "RAN" not in proc.stdout
    assert proc.stdout.startswith("REFUSED"), proc.stdout + proc.stderr
    # the cluster is unharmed: the owner still runs tasks
    assert client.submit(sum, [2, 3], pure=False).result(timeout=30) == 5


def test_worker_without_the_cluster_certificate_cannot_join(tls_cluster, tmp_path):
    cluster, client, _ = tls_cluster
    from distributed.security import Security
    other = Security.temporary()
    cert, key = tmp_path / "other.pem", tmp_path / "other.key"
    cert.write_text(other.tls_ca_file)
    key.write_text(other.tls_worker_key)
    proc = subprocess.run([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                           "--no-nanny", "--nthreads", "1", "--death-timeout", "8", "--name", "intruder",
                           "--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode != 0
    names = [w["name"] for w in client.scheduler_info()["workers"].values()]
    assert "intruder" not in names and len(names) == 1


def test_certificate_files_are_readable_by_the_owner_only(tls_cluster):
    cluster, _, _ = tls_cluster
    folder = Path(cluster.tls_dir)
    assert folder.parent == SHARED                                # where workers can read them
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600 and f.stat().st_uid == os.getuid()
    # another account on the same machine cannot read the key (SHARED itself is mode 1777)
    proc = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(folder / "key.pem")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr
    # the job script names the files, not their contents
    script = cluster.job_script()
    assert f"--tls-key {folder}/key.pem" in script and "PRIVATE KEY" not in script


def test_closing_removes_the_certificates_and_the_jobs(slurm):
    from distributed import Client
    name = unique("resqmp-tlsc-")
    p = profiles.load(str(PROFILE), [f"cluster.job_name={name}"])
    cluster = for_profile(p, worker_environment(p)).start()
    folder = Path(cluster.tls_dir)
    client = Client(cluster)
    cluster.scale(1)
    client.wait_for_workers(1, timeout=120)
    assert scheduler_jobs("slurm", name)
    client.close()
    cluster.close()
    assert not folder.exists()
    assert wait_until(lambda: not scheduler_jobs("slurm", name), 120)
