#!/bin/bash
# A two-node SLURM on this one machine for the resqmp multi-node tests: a controller on this host
# and two compute nodes, rqmn-c1 and rqmn-c2, each a slurmd in namespaces of its own:
#
#   network  `ip netns` rqmn-cN, a veth pair; its node end is called rqmn0 and has 10.211.77.1N/24,
#            its host end is on the bridge rqmn0 (10.211.77.1/24) of this host. So "rqmn0" names
#            the cluster network on the launcher and on every node (profile: cluster.interface).
#   UTS      hostname rqmn-cN (`hostname` in a worker job says which node it runs on)
#   mount    a private tmpfs on /tmp; the shared directory (MN_SHARED_DIR, under /tmp by default)
#            bind-mounted back at the same path; everything outside /tmp is the host's own
#
# It runs beside the single-node SLURM of ci/slurm/start.sh and shares nothing with it: its own
# slurm.conf (SLURM_CONF below), ClusterName, ports, munged (socket and key), state, spool, PID and
# log folders. Starting or stopping either never touches the other. Clients reach this controller
# only with SLURM_CONF=/etc/slurm-resqmp-mn/slurm.conf in their environment (sbatch, squeue,
# scancel, sinfo; `resqmp launch` passes its environment on to them).
#
# Idempotent: a re-run stops what a previous run started (stop-multinode.sh: by PID file, never by
# name) and starts it again with a clean job state. Needs root, slurm-wlm, munge and iproute2
# (installed from Debian when missing). ~15 s once the packages are there.
#
#   MN_SHARED_DIR   (default /tmp/hpc-ci-mn/shared) mode 1777; ci/profiles/slurm-multinode.yaml
#                   puts task files, TLS files and job logs below it
#   MN_SHARE_PATHS  more host paths (colon-separated) the nodes must see although they are under
#                   /tmp, e.g. a checkout with its .venv (the workers' python) in /tmp
set -euo pipefail
# The daemons started here outlive this script: they must not keep open what the caller had open
# (under `flock LOCK ci/slurm/start-multinode.sh`, munged would hold LOCK for as long as it runs).
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"
done
export DEBIAN_FRONTEND=noninteractive
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/slurm/multinode.env
. "$HERE/multinode.env"
export SLURM_CONF
[ "$(id -u)" = 0 ] || { echo "ci/slurm/start-multinode.sh: must run as root" >&2; exit 1; }

# 1. packages (no-op when present); the slurm user first, as in start.sh
if ! dpkg -s slurm-wlm munge iproute2 >/dev/null 2>&1; then
  id slurm >/dev/null 2>&1 || adduser --quiet --system --group --uid 64030 --no-create-home --home /nonexistent slurm 2>/dev/null \
    || useradd --system --user-group --uid 64030 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin slurm
  apt-get install -y -qq --no-install-recommends slurm-wlm munge iproute2 >/dev/null 2>&1 \
    || { apt-get update -qq; apt-get install -y -qq --no-install-recommends slurm-wlm munge iproute2 >/dev/null; }
fi

# 2. whatever a previous run left: daemons (by PID file), job processes, namespaces, bridge
bash "$HERE/stop-multinode.sh" >/dev/null

# the subnet must be free on this host (another bridge or a route to it would swallow the traffic)
if ip -4 route show | grep -q "^$MN_NET\.0/"; then
  echo "ci/slurm/start-multinode.sh: $MN_NET.0/24 is already routed on this host: $(ip -4 route show | grep "^$MN_NET\.0/")" >&2
  exit 1
fi

HOST=$(hostname -s)
mkdir -p "$MN_SHARED_DIR"; chmod 1777 "$MN_SHARED_DIR"
install -d -m 0755 "$MN_ETC" "$MN_RUN" "$MN_RUN/stash" "$MN_LOG" /var/spool/resqmp-mn
install -d -o slurm -g slurm -m 0755 "$MN_RUN/slurm" /var/spool/resqmp-mn/slurmctld "$MN_LOG/slurm"
install -d -o munge -g munge -m 0755 "$MN_RUN/munge"
install -d -o munge -g munge -m 0700 /var/lib/resqmp-mn-munge "$MN_LOG/munge"

# 3. a munged of its own: own key, socket and PID file, so stopping the single-node SLURM's munged
#    (ci/slurm/stop.sh) cannot cut this cluster off, nor the other way round
if [ ! -s "$MN_ETC/munge.key" ]; then
  dd if=/dev/urandom of="$MN_ETC/munge.key" bs=1 count=1024 status=none
fi
chown munge:munge "$MN_ETC/munge.key"; chmod 400 "$MN_ETC/munge.key"
rm -f "$MN_MUNGE_SOCKET" "$MN_RUN/munge/munged.pid"
runuser -u munge -- /usr/sbin/munged --socket="$MN_MUNGE_SOCKET" --key-file="$MN_ETC/munge.key" \
  --pid-file="$MN_RUN/munge/munged.pid" --log-file="$MN_LOG/munge/munged.log" \
  --seed-file=/var/lib/resqmp-mn-munge/munged.seed
for _ in $(seq 50); do [ -s "$MN_RUN/munge/munged.pid" ] && break; sleep 0.1; done
cp "$MN_RUN/munge/munged.pid" "$MN_RUN/munged.pid"
munge --socket="$MN_MUNGE_SOCKET" -n | unmunge --socket="$MN_MUNGE_SOCKET" >/dev/null

# 4. the network: bridge rqmn0 on this host; per node a netns whose veth end is also called rqmn0
ip link add "$MN_IF" type bridge
ip addr add "$MN_NET.1/24" dev "$MN_IF"
ip link set "$MN_IF" up
for i in 1 2; do
  node=rqmn-c$i
  ip netns add "$node"
  ip link add "$node-h" type veth peer name "$MN_IF" netns "$node"
  ip link set "$node-h" master "$MN_IF" up
  ip -n "$node" link set lo up
  ip -n "$node" addr add "$MN_NET.1$i/24" dev "$MN_IF"
  ip -n "$node" link set "$MN_IF" up
  ip -n "$node" route add default via "$MN_NET.1"
  # bound over /etc/hosts on the node (step 7): the node resolves every name
  mkdir -p "/etc/netns/$node"
  # (this host's own name is dropped from its loopback line: on a node it names the controller)
  { awk -v host="$HOST" '/^[[:space:]]*#/ || NF == 0 {print; next}
      {line = $1; for (f = 2; f <= NF; f++) if ($f != host && $f !~ /^rqmn-/) line = line " " $f
       if (line != $1) print line}' /etc/hosts
    echo "$MN_NET.1 $HOST"; echo "$MN_NET.11 rqmn-c1"; echo "$MN_NET.12 rqmn-c2"; } > "/etc/netns/$node/hosts"
done
# bridged frames must not be dropped by iptables (br_netfilter + a DROP policy, as container engines set)
if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && command -v iptables >/dev/null; then
  iptables -C FORWARD -i "$MN_IF" -o "$MN_IF" -j ACCEPT 2>/dev/null \
    || iptables -I FORWARD -i "$MN_IF" -o "$MN_IF" -j ACCEPT 2>/dev/null || true
fi

# 5. slurm.conf. One CPU per node (this machine has 2): two one-CPU worker jobs land on two nodes.
#    RealMemory: 40% of what slurmd detects per node (both nodes share this machine's memory).
MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
MEM=$(( MEM * 40 / 100 ))
cat > "$SLURM_CONF" <<EOF
# written by resqmp ci/slurm/start-multinode.sh: controller $HOST + nodes rqmn-c1, rqmn-c2
ClusterName=resqmp-mn
SlurmctldHost=$HOST($MN_NET.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MN_MUNGE_SOCKET
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldPidFile=$MN_RUN/slurm/slurmctld.pid
SlurmdPidFile=$MN_RUN/slurmd-%n.pid
SlurmctldPort=$MN_CTLD_PORT
SlurmdPort=$MN_SLURMD_PORT
StateSaveLocation=/var/spool/resqmp-mn/slurmctld
SlurmdSpoolDir=/var/spool/resqmp-mn/slurmd-%n
SlurmctldLogFile=$MN_LOG/slurm/slurmctld.log
SlurmdLogFile=$MN_LOG/slurmd-%n.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=rqmn-c1 NodeAddr=$MN_NET.11 CPUs=1 RealMemory=$MEM State=UNKNOWN
NodeName=rqmn-c2 NodeAddr=$MN_NET.12 CPUs=1 RealMemory=$MEM State=UNKNOWN
PartitionName=$MN_PARTITION Nodes=rqmn-c[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

# 6. the controller, on this host (it listens on every address; the nodes reach it on rqmn0)
rm -f "$MN_RUN/slurm/slurmctld.pid"
/usr/sbin/slurmctld -c -f "$SLURM_CONF"
for _ in $(seq 100); do [ -s "$MN_RUN/slurm/slurmctld.pid" ] && break; sleep 0.1; done
cp "$MN_RUN/slurm/slurmctld.pid" "$MN_RUN/slurmctld.pid"

# 7. the nodes: slurmd -N NODE inside the node's network, UTS and mount namespaces. Its jobs are
#    its children and so run in the same namespaces. A bind mount cannot come from another mount
#    namespace: each path that must stay visible under the private /tmp is held on a stash mount
#    point first, then moved back to its own path once the tmpfs is on /tmp.
keep=()
# shortest first, so that a folder inside one already kept is recognised as such
mapfile -t wanted < <(tr ':' '\n' <<< "$MN_SHARED_DIR:${MN_SHARE_PATHS:-}" | grep . | xargs -d '\n' readlink -f \
                      | awk '{ print length($0) " " $0 }' | sort -n | cut -d' ' -f2-)
for p in "${wanted[@]}"; do
  case "$p/" in /tmp/*) ;; *) continue ;; esac          # outside /tmp: the node sees it anyway
  inside=; for k in "${keep[@]}"; do case "$p/" in "$k"/*) inside=1 ;; esac; done
  [ -n "$inside" ] || keep+=("$p")                      # a folder inside a kept one comes with it
done
for i in 1 2; do
  node=rqmn-c$i
  install -d -m 0755 "/var/spool/resqmp-mn/slurmd-$node"
  rm -f "$MN_RUN/slurmd-$node.pid"
  script="set -e; hostname $node; mount --bind /etc/netns/$node/hosts /etc/hosts"
  n=0
  for p in "${keep[@]}"; do
    n=$((n + 1)); stash="$MN_RUN/stash/$node-$n"; mkdir -p "$stash"
    script+="; mount --bind '$p' '$stash'"
  done
  script+="; mount -t tmpfs -o mode=1777,size=2g tmpfs-$node /tmp"
  n=0
  for p in "${keep[@]}"; do
    n=$((n + 1)); stash="$MN_RUN/stash/$node-$n"
    script+="; mkdir -p '$p'; mount --move '$stash' '$p'"
  done
  script+="; exec /usr/sbin/slurmd -f '$SLURM_CONF' -N $node"
  # nsenter, not `ip netns exec`: that remounts /sys for the netns, which hides /sys/fs/cgroup
  # (slurmd 22.05 will not start without it)
  nsenter --net="/run/netns/$node" unshare --uts --mount --propagation private -- /bin/sh -c "$script"
  for _ in $(seq 100); do [ -s "$MN_RUN/slurmd-$node.pid" ] && break; sleep 0.1; done
  [ -s "$MN_RUN/slurmd-$node.pid" ] || { echo "ci/slurm/start-multinode.sh: slurmd on $node did not start; see $MN_LOG/slurmd-$node.log" >&2; exit 1; }
done

# 8. both nodes idle, then a smoke job on each node
for _ in $(seq 60); do
  [ "$(sinfo -h -o %t -p "$MN_PARTITION" | sort -u | tr -d '\n')" = idle ] && \
    [ "$(sinfo -h -N -o %N -p "$MN_PARTITION" | wc -l)" = 2 ] && break
  sleep 0.5
done
scontrol update NodeName=rqmn-c[1-2] State=RESUME 2>/dev/null || true
sinfo -N -p "$MN_PARTITION"
for i in 1 2; do
  node=rqmn-c$i
  got=$(sinfo -h -n "$node" -o %t)
  [ "$got" = idle ] || { echo "ci/slurm/start-multinode.sh: node $node is $got, expected idle; see $MN_LOG/slurmd-$node.log" >&2; exit 1; }
  jid=$(sbatch --parsable -w "$node" -o "$MN_SHARED_DIR/smoke-%j.out" \
    --wrap "echo \"smoke job on \$(hostname) as \$(id -un), \$(ls /tmp | wc -l) entries in /tmp\"")
  for _ in $(seq 60); do squeue -h -j "$jid" 2>/dev/null | grep -q . || break; sleep 0.5; done
  out=$(cat "$MN_SHARED_DIR/smoke-$jid.out" 2>/dev/null || true); rm -f "$MN_SHARED_DIR/smoke-$jid.out"
  echo "$out"
  case "$out" in "smoke job on $node "*) ;; *) echo "ci/slurm/start-multinode.sh: smoke job $jid on $node failed" >&2; exit 1 ;; esac
done
echo "SLURM multi-node ready: export SLURM_CONF=$SLURM_CONF"
