"""resqmp: run resqpy multiprocessing wrapper batches on Dask clusters and recombine them.

Flow: profiles -> backends (cluster) -> worker_env -> batch -> execute/tasks -> recombine -> report.
"""
from resqmp.api import function_multiprocessing

__all__ = ["function_multiprocessing"]
__version__ = "0.1.0"
