#!/bin/sh
# resqmp image entrypoint (launcher, scheduler and worker alike): point NUMBA_CACHE_DIR at a
# writable copy of the pre-compiled numba cache, then run the command. Kubernetes manifests
# must set `args:` (not `command:`) so that this runs.
set -e
. /opt/resqmp/lib/numba-cache.sh
if [ "$#" -eq 0 ]; then
    set -- resqmp --help
fi
exec "$@"
