"""One thread of numba and BLAS per task, also on clusters resqmp did not start.

resqmp's own workers start with NUMBA_NUM_THREADS=1 and the BLAS variables at 1 (worker_env). A
cluster the user started (the drop-in with the user's own LocalCluster or Client, the `external`
backend) has numba's default pool, one thread per core, in every worker: two single-threaded
workers on two cores then run four numba threads (measured: 18 % slower on the benchmark).
numba reads NUMBA_NUM_THREADS only at import, but `numba.set_num_threads` applies to the calling
thread at run time, and threadpoolctl limits BLAS/OpenMP pools at run time: so each task sets
both just before its wrapper runs, in the thread that runs it.

A choice written in the worker's environment wins: with NUMBA_NUM_THREADS set there, numba is
left alone; with any of the BLAS variables set (Dask's nannies set OMP_NUM_THREADS and friends to
1 themselves), BLAS is left alone. Otherwise the first task sets them to 1 in the worker's
environment (see _limit_blas): libraries and processes started by later tasks inherit that.
"""
from __future__ import annotations

import os

#: variables that already decide the BLAS/OpenMP pools' size when set in the worker's environment
BLAS_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                  "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_task_threads() -> None:
    """Call in the thread about to run a task's wrapper. Only on a Dask worker: tasks run in the
    caller's own process (the drop-in with cluster=None) leave that process as it was."""
    try:
        from distributed import get_worker
        get_worker()
    except (ImportError, ValueError):
        return
    if "NUMBA_NUM_THREADS" not in os.environ:
        # imported here even when the wrapper imports resqpy (and so numba) only once it runs;
        # this also starts numba's threading layer, so that its OpenMP pool is found below
        import numba
        if numba.get_num_threads() != 1:
            numba.set_num_threads(1)
    if not any(v in os.environ for v in BLAS_VARIABLES):
        _limit_blas()


def _limit_blas() -> None:
    """The pools loaded now, through threadpoolctl; those loaded later (a wrapper that imports
    scipy only when it runs) read the variables at load time, so they are set in this process's
    environment too, which also makes this a one-time step per worker process."""
    for name in BLAS_VARIABLES:
        os.environ[name] = "1"
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1)      # not a context: it stays for this process's later tasks
