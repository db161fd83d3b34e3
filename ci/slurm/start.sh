#!/bin/bash
# Start a single-node SLURM (Debian 12 slurm-wlm 22.05) for the resqmp integration tests, without
# systemd, on a fresh CI machine or a developer box. Idempotent: a re-run stops the daemons a
# previous run started (by PID file, never by name) and starts them again with a clean job state.
# Takes ~10 s once the packages are installed. Needs root.
#
#   STATE_DIR   (default /tmp/hpc-ci)         PID files
#   SHARED_DIR  (default /tmp/hpc-ci/shared)  mode 1777; ci/profiles/slurm-ci.yaml puts task
#                                             files, TLS files and job logs below it
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
STATE_DIR=${STATE_DIR:-/tmp/hpc-ci}
SHARED_DIR=${SHARED_DIR:-$STATE_DIR/shared}
PIDDIR=$STATE_DIR/pids
HOST=$(hostname -s)
[ "$(id -u)" = 0 ] || { echo "ci/slurm/start.sh: must run as root" >&2; exit 1; }
mkdir -p "$PIDDIR" "$SHARED_DIR"
chmod 1777 "$SHARED_DIR"

# 1. packages (no-op when present). The slurm user normally comes from the package's preinst;
#    create it first so a half-configured earlier install cannot leave it missing.
if ! dpkg -s slurm-wlm munge >/dev/null 2>&1; then
  id slurm >/dev/null 2>&1 || adduser --quiet --system --group --uid 64030 --no-create-home --home /nonexistent slurm 2>/dev/null \
    || useradd --system --user-group --uid 64030 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin slurm
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -qq; apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
fi

# 2. the host name must resolve: slurmctld and slurmd look up SlurmctldHost / NodeName
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts

# 3. stop what a previous run started (by PID file only)
for d in slurmd slurmctld munged; do
  f=$PIDDIR/$d.pid
  if [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
    kill "$(cat "$f")"
    for _ in $(seq 50); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$f"
done

# 4. munge: a key (mode 400, owned by munge) and its runtime dirs; runs as user munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
rm -f /run/munge/munge.socket.2 /run/munge/munged.pid
runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
cp /run/munge/munged.pid "$PIDDIR/munged.pid"
munge -n | unmunge >/dev/null

# 5. slurm.conf: no cgroups in a CI container (proctrack/linuxproc, task/none), no accounting.
#    RealMemory: 90% of what slurmd detects (it must not exceed the detected value).
MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
MEM=$(( MEM * 90 / 100 ))
# Not `nproc`: it honours OMP_NUM_THREADS, which distributed's nanny exports into whatever started a
# LocalCluster (a pytest run, say) - a 1-CPU node would then hold one worker job at a time.
CPUS=$(getconf _NPROCESSORS_ONLN)
mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<EOF
# written by resqmp ci/slurm/start.sh: single-node test cluster
ClusterName=resqmp-ci
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
# CR_CPU: a job takes logical CPUs, not whole cores, so 2 one-CPU jobs fit on a hyperthreaded core too
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
rm -f /etc/slurm/cgroup.conf   # not used with the plugins above; a stale one would be read
install -d -o slurm -g slurm -m 0755 /run/slurm /var/spool/slurmctld /var/log/slurm
install -d -o root -g root -m 0755 /var/spool/slurmd

# 6. daemons (they daemonize and write PID files); -c: clear the previous job state
rm -f /run/slurm/slurmctld.pid /run/slurm/slurmd.pid
/usr/sbin/slurmctld -c
for _ in $(seq 100); do [ -s /run/slurm/slurmctld.pid ] && break; sleep 0.1; done
cp /run/slurm/slurmctld.pid "$PIDDIR/slurmctld.pid"
/usr/sbin/slurmd
for _ in $(seq 100); do [ -s /run/slurm/slurmd.pid ] && break; sleep 0.1; done
cp /run/slurm/slurmd.pid "$PIDDIR/slurmd.pid"

# 7. wait for the node to be idle, then a smoke test with a real batch job
for _ in $(seq 60); do
  [ "$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)" = idle ] && break; sleep 0.5
done
scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
sinfo
got=$(sinfo -h -n "$HOST" -o %c)
[ "$got" = "$CPUS" ] || { echo "ci/slurm/start.sh: node $HOST has $got CPUs in SLURM, expected $CPUS" >&2; exit 1; }
jid=$(sbatch --parsable -o "$SHARED_DIR/smoke-%j.out" --wrap 'echo "smoke job on $(hostname) as $(id -un)"')
for _ in $(seq 60); do squeue -h -j "$jid" 2>/dev/null | grep -q . || break; sleep 0.5; done
cat "$SHARED_DIR/smoke-$jid.out"; rm -f "$SHARED_DIR/smoke-$jid.out"
echo "SLURM ready"
