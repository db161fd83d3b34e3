"""dask_jobqueue, imported without changing how the process handles Ctrl-C.

dask_jobqueue.runner (imported by the package itself) replaces the SIGINT handler with `sys.exit()`:
a Ctrl-C would then end `launch` or `profiles check` with exit 0, past their teardown report.
Importing a backend must leave the process's handler alone (the CLI's, or Python's
KeyboardInterrupt for API users), so every resqmp module that uses dask_jobqueue imports this one
first.
"""
import signal
import threading

_sigint = signal.getsignal(signal.SIGINT)
import dask_jobqueue  # noqa: E402,F401

# signal.signal() works only in the main thread (and only there could runner have changed it);
# None: the handler was not installed from Python, nothing to put back
if threading.current_thread() is threading.main_thread() and _sigint is not None:
    signal.signal(signal.SIGINT, _sigint)
