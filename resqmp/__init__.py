"""resqmp: run resqpy multiprocessing wrapper batches on Dask clusters and recombine them.

Flow: profiles -> backends (cluster) -> worker_env -> batch -> execute/tasks -> recombine -> report.
"""
__all__ = ["function_multiprocessing", "TaskError", "TasksFailed"]
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: importing resqmp (the CLI, a worker unpickling a task) must not import resqpy and so
    # numba before the worker environment is in place; numba reads its settings once, at import.
    if name in ("function_multiprocessing", "TaskError", "TasksFailed"):
        from resqmp import api
        return getattr(api, name)
    raise AttributeError(f"module 'resqmp' has no attribute {name!r}")
