"""The drop-in's numba cache and warm-up on clusters as users have them (resqmp.warm): workers that
compiled resqpy in memory before the call, a numba set up in code, a pinned worker; and the
dashboard check behind a proxy that refuses HEAD. From a hostile review of the first version."""
from __future__ import annotations

import os

import pytest
from distributed import Client, LocalCluster

from epc_compare import content, resqpy_reference
from resqmp import warm
from resqmp.api import function_multiprocessing
from resqmp.numba_stats import resqpy_numba_stats
from test_users_cluster_warm import _kwargs, users_environment  # noqa: F401 - the fixture

FIND_FACES = "resqpy.multi_processing:find_faces_to_represent_surface_regular_wrapper"


def _warmed() -> list[str]:
    return sorted(warm._warmed)


@pytest.mark.parametrize("dirty", [1, 2])
def test_workers_that_compiled_resqpy_in_memory_are_not_the_ones_filling_the_cache(example, tmp_path,
                                                                                  users_environment, dirty):
    """Workers that ran resqpy's find-faces code before the drop-in (e.g. resqpy's own
    function_multiprocessing on the same cluster) compiled it in memory, and numba never writes
    that to the cache: a warm-up there fills nothing, and the other worker, not warmed before the
    batch, would compile on its first task beside the others (numba#4807). So a worker that did
    not is warmed first (and the other then compiles nothing); when every worker did, all are
    warmed before the batch, taking turns on the cache. The output is resqpy's either way."""
    function, kwargs_list = _kwargs(example)
    ref = tmp_path / "ref" / "ref.epc"
    ref.parent.mkdir()
    assert all(resqpy_reference(example["batch"], ref, ref.parent))

    def compile_in_memory() -> dict:        # by value: no resqpy in the worker before this call
        from resqmp.warm import warm_numba_cache
        return warm_numba_cache(("find_faces",))

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            workers = sorted(client.scheduler_info()["workers"])
            made = client.run(compile_in_memory, workers=workers[:dirty])
            before = client.run(resqpy_numba_stats)
            out = tmp_path / "out.epc"
            assert function_multiprocessing(function, kwargs_list, out, cluster=client,
                                            tmp_dir_path=tmp_path) == [True] * len(kwargs_list)
            where = client.run(warm.cache_location)
            stats = client.run(resqpy_numba_stats)
            warmed = client.run(_warmed)
    assert all(m["cache_enabled"] is False and not m["errors"] for m in made.values())
    assert where[workers[0]] == where[workers[1]] is not None                  # one cache, on for both
    assert content(out) == content(ref)
    if dirty == 1:
        assert any(f.suffix == ".nbc" for f in users_environment.rglob("*"))
        # the clean worker warmed first; the one that compiled in memory compiled nothing more
        assert warmed == {workers[0]: [], workers[1]: ["find_faces"]}
        assert stats[workers[0]]["compiled"] == before[workers[0]]["compiled"]
    else:
        assert warmed == {w: ["find_faces"] for w in workers}


def test_a_worker_whose_numba_settings_changed_since_numba_was_imported_keeps_them(example, tmp_path,
                                                                                   users_environment):
    """The user's script imported resqpy at its top (its import compiles a parallel function and
    so starts numba's threads), then pinned each worker to one core (os.sched_setaffinity) and
    chose numba's threading layer in code (numba.config.THREADING_LAYER, as numba documents).
    Turning the cache on must not make numba reread its whole environment: that recounts the cores
    (1 now, its threads were started with 2), raises 'Cannot set NUMBA_NUM_THREADS to a different
    value once the threads have been launched' in the drop-in and in every later compilation in
    that worker (the user's own too), and puts the user's settings back to numba's defaults."""
    function, kwargs_list = _kwargs(example)
    ref = tmp_path / "ref" / "ref.epc"
    ref.parent.mkdir()
    assert all(resqpy_reference(example["batch"], ref, ref.parent))

    def users_setup() -> None:          # by value: this module imports resqpy
        import os
        import numba
        import resqpy.multi_processing  # noqa: F401
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        numba.config.THREADING_LAYER = "workqueue"

    def users_numba() -> tuple:
        import numba

        @numba.njit
        def plus_one(x):
            return x + 1
        return plus_one(1), numba.config.THREADING_LAYER

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            client.run(users_setup)
            out = tmp_path / "out.epc"
            assert function_multiprocessing(function, kwargs_list, out, cluster=client,
                                            tmp_dir_path=tmp_path) == [True] * len(kwargs_list)
            after = client.run(users_numba)
            stats = client.run(resqpy_numba_stats)
    assert content(out) == content(ref)
    assert list(after.values()) == [(2, "workqueue")]
    assert [s["cache_enabled"] for s in stats.values()] == [True]
    assert [s["cache_dir"] for s in stats.values()] == [str(users_environment)]


def test_a_dashboard_behind_a_proxy_that_refuses_head_is_still_checked(tmp_path, monkeypatch):
    """A reverse proxy in front of the scheduler's dashboard that answers HEAD with 405 (Method Not
    Allowed: many allow GET only). That answer says nothing about Bokeh: the page is read, as
    for a 404, so a scheduler without bokeh is still named as such, not printed as a dashboard."""
    import http.server
    import threading
    import urllib.error
    import urllib.request
    from distributed import Client
    from resqmp import dashboard
    from test_dashboard import BIN, wait_for
    import json
    import subprocess

    shadow = tmp_path / "no-bokeh" / "bokeh"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("bokeh is not installed here")\n')
    sched_file = tmp_path / "s.json"
    scheduler = subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)],
                                 env={**os.environ, "PYTHONPATH": str(shadow.parent)},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0, 120, "the scheduler file")
        address = json.loads(sched_file.read_text())["address"]
        with Client(address) as client:
            upstream = client.dashboard_link.rsplit("/", 1)[0]

            class Proxy(http.server.BaseHTTPRequestHandler):
                def do_HEAD(self):
                    self.send_error(405)

                def do_GET(self):
                    try:
                        with urllib.request.urlopen(upstream + self.path, timeout=30) as r:
                            code, body = r.status, r.read()
                    except urllib.error.HTTPError as e:
                        code, body = e.code, e.read()
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args):
                    pass

            proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
            threading.Thread(target=proxy.serve_forever, daemon=True).start()
            try:
                link = f"http://127.0.0.1:{proxy.server_address[1]}/status"
                missing = dashboard._missing(link)
            finally:
                proxy.shutdown()
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=60)
    assert missing == "the scheduler's Python environment lacks bokeh>=3.1.0"


def test_a_cache_directory_the_user_gave_numba_in_code_is_kept(example, tmp_path, users_environment):
    """The user's worker set numba's cache directory in code (numba.config.CACHE_DIR, or a
    .numba_config.yaml, no NUMBA_CACHE_DIR in the environment): resqpy's cache goes there, not into
    resqmp's default under HOME."""
    function, kwargs_list = _kwargs(example)
    mine = tmp_path / "my-numba-cache"

    def users_setup(path: str) -> None:
        import numba
        numba.config.CACHE_DIR = path

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            client.run(users_setup, str(mine))
            assert all(function_multiprocessing(function, kwargs_list[:1], tmp_path / "out.epc", cluster=client,
                                                tmp_dir_path=tmp_path))
            stats = client.run(resqpy_numba_stats)
            where = client.run(warm.cache_location)
    assert [s["cache_dir"] for s in stats.values()] == [str(mine)]
    assert [w[1] for w in where.values()] == [os.path.realpath(mine)]
    assert any(f.suffix == ".nbc" for f in mine.rglob("*"))
    assert not users_environment.exists()
