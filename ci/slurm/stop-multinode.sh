#!/bin/bash
# Stop the two-node SLURM that ci/slurm/start-multinode.sh started: cancel its jobs, stop its
# daemons by their PID files (never by name), end what still runs inside its node namespaces (job
# processes), then remove the namespaces, the bridge and the nodes' /etc/netns files. Leaves the
# shared directory and the single-node SLURM of start.sh alone. Safe to run when nothing runs.
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/slurm/multinode.env
. "$HERE/multinode.env"
export SLURM_CONF
[ "$(id -u)" = 0 ] || { echo "ci/slurm/stop-multinode.sh: must run as root" >&2; exit 1; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pid_file() {   # $1 PID file, $2 label
  alive "$1" || { rm -f "$1"; return 0; }
  local p; p=$(cat "$1")
  kill "$p"; for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -9 "$p"
  rm -f "$1"; echo "stopped $2 ($p)"
}

if [ -f "$SLURM_CONF" ] && alive "$MN_RUN/slurmctld.pid" && command -v scancel >/dev/null; then
  timeout 10 scancel -p "$MN_PARTITION" 2>/dev/null
  for _ in $(seq 40); do
    [ -z "$(timeout 5 squeue -h -p "$MN_PARTITION" 2>/dev/null)" ] && break; sleep 0.5
  done
fi
for node in rqmn-c1 rqmn-c2; do stop_pid_file "$MN_RUN/slurmd-$node.pid" "slurmd $node"; done
stop_pid_file "$MN_RUN/slurmctld.pid" slurmctld
stop_pid_file "$MN_RUN/munged.pid" munged

for node in rqmn-c1 rqmn-c2; do
  if ip netns list 2>/dev/null | grep -qw "$node"; then
    # processes this cluster started in the node (job steps that outlived slurmd): by PID
    pids=$(ip netns pids "$node" 2>/dev/null)
    [ -n "$pids" ] && { kill $pids 2>/dev/null; sleep 1; kill -9 $(ip netns pids "$node" 2>/dev/null) 2>/dev/null; }
    ip netns del "$node" && echo "removed netns $node"
  fi
  ip link del "$node-h" 2>/dev/null
  rm -rf "/etc/netns/$node"
  rmdir "$MN_RUN"/stash/"$node"-* 2>/dev/null
done
ip link show "$MN_IF" >/dev/null 2>&1 && ip link del "$MN_IF" && echo "removed bridge $MN_IF"
if command -v iptables >/dev/null; then
  iptables -D FORWARD -i "$MN_IF" -o "$MN_IF" -j ACCEPT 2>/dev/null
fi
exit 0
