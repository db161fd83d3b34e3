#!/bin/bash
# Stop the single-node SGE that ci/sge/start.sh started: delete jobs, then stop execd and qmaster
# by their PID files (never by name). Safe to run when nothing is running.
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
STATE_DIR=${STATE_DIR:-/tmp/hpc-ci}
PIDDIR=$STATE_DIR/pids
if command -v qdel >/dev/null && [ -s "$PIDDIR/sge_qmaster.pid" ]; then
  timeout 10 qdel -f -u "$(id -un)" >/dev/null 2>&1; sleep 2
fi
for d in sge_execd sge_qmaster; do
  f=$PIDDIR/$d.pid; [ -s "$f" ] || continue; p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill "$p"; for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$f"; echo "stopped $d ($p)"
done
exit 0
