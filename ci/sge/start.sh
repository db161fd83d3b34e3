#!/bin/bash
# Start a single-node Son of Grid Engine 8.1.9 (Debian 12 gridengine-* packages) for the resqmp
# integration tests, without systemd, on a fresh CI machine or a developer box. Idempotent: a
# re-run stops qmaster/execd (by PID file, never by name) and re-applies the configuration.
# Takes ~10 s once the packages are installed. Needs root.
#
#   STATE_DIR   (default /tmp/hpc-ci)         PID files, generated SGE config files
#   SHARED_DIR  (default /tmp/hpc-ci/shared)  mode 1777; ci/profiles/sge-ci.yaml puts task
#                                             files, TLS files and job logs below it
# Clients need SGE_ROOT=/var/lib/gridengine (the Debian default; the qsub wrapper sets it).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
HOST=$(hostname -s)
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
COMMON=$SGE_ROOT/$SGE_CELL/common
QPID=/var/spool/gridengine/qmaster/qmaster.pid
STATE_DIR=${STATE_DIR:-/tmp/hpc-ci}
SHARED_DIR=${SHARED_DIR:-$STATE_DIR/shared}
PIDDIR=$STATE_DIR/pids; CFG=$STATE_DIR/sgecfg
[ "$(id -u)" = 0 ] || { echo "ci/sge/start.sh: must run as root" >&2; exit 1; }
mkdir -p "$PIDDIR" "$CFG" "$SHARED_DIR"; chmod 1777 "$SHARED_DIR"

# 1. packages; preseed debconf so the postinst builds a cluster with this host as master
if ! dpkg -s gridengine-master gridengine-exec gridengine-client >/dev/null 2>&1; then
  debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $HOST
gridengine-client shared/gridenginemaster string $HOST
EOF
  apt-get install -y -qq --no-install-recommends gridengine-master gridengine-exec gridengine-client >/dev/null 2>&1 \
    || { apt-get update -qq; apt-get install -y -qq --no-install-recommends gridengine-master gridengine-exec gridengine-client >/dev/null; }
fi

# 2. stop daemons from a previous run (PID files; also catches ones started by the package's init script)
stop_pid() { # $1 = pid file
  local p; [ -s "$1" ] || return 0; p=$(cat "$1")
  if kill -0 "$p" 2>/dev/null && grep -q sge_ /proc/"$p"/comm 2>/dev/null; then
    kill "$p"; for i in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1"
}
for f in "$PIDDIR"/sge_execd.pid /var/spool/gridengine/execd/*/execd.pid "$PIDDIR"/sge_qmaster.pid "$QPID"; do
  [ -e "$f" ] && stop_pid "$f"
done

# 3. host naming. /etc/hosts maps $HOST to 127.0.0.1, whose reverse name is "localhost";
#    SGE then refuses clients ("client IP resolved to host name localhost. This is not
#    identical to clients host name vm"). host_aliases makes both names one SGE host.
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts
echo "$HOST" > $COMMON/act_qmaster
echo "$HOST localhost" > $COMMON/host_aliases
chown sgeadmin:sgeadmin $COMMON/act_qmaster $COMMON/host_aliases
install -d -o sgeadmin -g sgeadmin /var/spool/gridengine/execd /var/run/gridengine
if [ ! -e /var/spool/gridengine/spooldb/sge ]; then   # spool DB missing (e.g. debconf said no)
  su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL /var/spool/gridengine/spooldb sgeadmin" sgeadmin
fi

# 4. qmaster (daemonizes, drops to sgeadmin)
/usr/sbin/sge_qmaster
for i in $(seq 100); do qstat >/dev/null 2>&1 && break; sleep 0.2; done
cp $QPID $PIDDIR/sge_qmaster.pid

# 5. cluster config (all idempotent)
qconf -ah "$HOST" >/dev/null 2>&1 || true      # admin host (execd on an admin host self-registers)
qconf -as "$HOST" >/dev/null 2>&1 || true      # submit host
# global config: allow root jobs (default min_uid/min_gid 1000 rejects uid 0)
qconf -sconf global | sed -e 's/^min_uid .*/min_uid                      0/' \
  -e 's/^min_gid .*/min_gid                      0/' > $CFG/global
qconf -Mconf $CFG/global >/dev/null
# scheduler: run every second instead of every 15 s
qconf -ssconf | sed -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' \
  -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' \
  -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' > $CFG/sched
qconf -Msconf $CFG/sched >/dev/null

# 6. execd (runs as root, reports to qmaster, auto-added as exec host)
/usr/sbin/sge_execd
for i in $(seq 100); do ls /var/spool/gridengine/execd/*/execd.pid >/dev/null 2>&1 && break; sleep 0.2; done
cat /var/spool/gridengine/execd/*/execd.pid > $PIDDIR/sge_execd.pid   # spool subdir is named "localhost"
for i in $(seq 100); do qconf -se "$HOST" >/dev/null 2>&1 && break; sleep 0.2; done

# 7. parallel environment "smp" (only needed for multi-core jobs: -pe smp N)
cat > $CFG/pe_smp <<'EOF'
pe_name            smp
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
qconf -sp smp >/dev/null 2>&1 && qconf -Mp $CFG/pe_smp >/dev/null || qconf -Ap $CFG/pe_smp >/dev/null

# 8. queue all.q on this host: slots = #cpus (getconf, not nproc: nproc honours OMP_NUM_THREADS), bash,
#    unix_behavior (honour #! line), no load threshold
cat > $CFG/q_all <<EOF
qname                 all.q
hostlist              $HOST
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp
rerun                 FALSE
slots                 $(getconf _NPROCESSORS_ONLN)
tmpdir                /tmp
shell                 /bin/bash
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
qconf -sq all.q >/dev/null 2>&1 && qconf -Mq $CFG/q_all >/dev/null || qconf -Aq $CFG/q_all >/dev/null
qmod -c "all.q@$HOST" >/dev/null 2>&1 || true   # clear any error state
qmod -e "all.q@$HOST" >/dev/null 2>&1 || true

# jobs of a previous run (e.g. stuck in "t"/"dt" after an execd died) would hold the slots:
# a restart starts with an empty queue, as slurmctld -c does for SLURM
qdel -f -u '*' '*' >/dev/null 2>&1 || true
for i in $(seq 50); do [ -z "$(qstat -u '*' 2>/dev/null)" ] && break; sleep 0.2; done

# 9. wait for the queue instance to get a load report, then smoke test
for i in $(seq 100); do qstat -f -q all.q | grep -q "all.q@$HOST .*lx-amd64 *$" && break; sleep 0.2; done
qstat -f
printf '#!/bin/bash\nhostname; id -un\n' > $CFG/smoke.sh
jid=$(cd "$SHARED_DIR" && qsub -terse -cwd -j y -o "$SHARED_DIR"/smoke.out -N smoke $CFG/smoke.sh)
for i in $(seq 300); do qstat -j "$jid" >/dev/null 2>&1 || break; sleep 0.2; done
if [ ! -s "$SHARED_DIR"/smoke.out ]; then
  echo "SGE smoke job $jid did not run within 60 s:" >&2; qstat -f >&2; qstat -j "$jid" >&2 || true
  exit 1
fi
cat "$SHARED_DIR"/smoke.out; rm -f "$SHARED_DIR"/smoke.out
echo "SGE ready"
