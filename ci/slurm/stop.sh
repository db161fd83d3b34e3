#!/bin/bash
# Stop the single-node SLURM that ci/slurm/start.sh started: cancel jobs, then stop the daemons
# by their PID files (never by name). Safe to run when nothing is running.
STATE_DIR=${STATE_DIR:-/tmp/hpc-ci}
PIDDIR=$STATE_DIR/pids
if command -v scancel >/dev/null && [ -s "$PIDDIR/slurmctld.pid" ]; then
  timeout 10 scancel --user="$(id -un)" 2>/dev/null; sleep 1
fi
for d in slurmd slurmctld munged; do
  f=$PIDDIR/$d.pid; [ -s "$f" ] || continue; p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill "$p"; for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$f"; echo "stopped $d ($p)"
done
exit 0
