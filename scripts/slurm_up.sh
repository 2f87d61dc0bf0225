#!/usr/bin/env bash
# slurm_up.sh - a REAL Slurm cluster on this one machine, for development and CI (root, Debian 12).
#
#   bash scripts/slurm_up.sh          install what is missing, start what is not running, wait until ready
#   bash scripts/slurm_down.sh        stop it (kills by pid file, never by name); --purge also drops state
#
# What you get (defaults): munged, slurmctld, slurmdbd (+ a private MariaDB on 127.0.0.1:3307, so `sacct`
# works: submitit's job.result() needs it to notice cancelled/killed/timed-out jobs), and one `slurmd -N`
# per virtual node: node1..node3 on their own loopback addresses 127.0.0.11..13 (in /etc/hosts), each
# with 2 CPUs and 2 fake GPUs (Gres=gpu:2 backed by /dev/null clones), so `--gpus-per-node` sets
# CUDA_VISIBLE_DEVICES / SLURM_JOB_GPUS / SLURM_STEP_GPUS as on a real GPU node. Partition `debug`.
# `hostname` is the same on every virtual node: jobs tell nodes apart by SLURMD_NODENAME / SLURM_NODEID.
#
# Idempotent: a second run finds everything up and returns in about a second; a restart with the
# packages present takes a few seconds; a changed node layout restarts the daemons with fresh state.
#
# Knobs (environment):
#   SLURM_CI_NODES=3  SLURM_CI_CPUS=2  SLURM_CI_MEM_MB=6000  SLURM_CI_GPUS=2  SLURM_CI_PARTITION=debug
#   SLURM_CI_ACCOUNTING=1 (0: no MariaDB/slurmdbd; sacct then fails)  SLURM_CI_TIMEOUT=120 (readiness, s)
set -euo pipefail

NODES=${SLURM_CI_NODES:-3}
CPUS=${SLURM_CI_CPUS:-2}
MEM=${SLURM_CI_MEM_MB:-6000}
GPUS=${SLURM_CI_GPUS:-2}
ACCOUNTING=${SLURM_CI_ACCOUNTING:-1}
PARTITION=${SLURM_CI_PARTITION:-debug}
TIMEOUT=${SLURM_CI_TIMEOUT:-120}
PREFIX=node
CLUSTER=sdgci
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN=/run/slurm-ci                 # pid files of the helpers we start + the list of what we started
VAR=/var/lib/slurm-ci             # fake GPU devices, private MariaDB datadir
LOG=/var/log/slurm
DBPORT=3307
DBSOCK=$RUN/mysqld.sock
DBPASS=slurmci

T0=$(date +%s.%N)
say() { printf '[slurm_up %6.2fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{print a-b}')" "$*"; }
die() {
  say "ERROR: $*"
  for f in "$LOG/slurmctld.log" "$LOG/slurmd-${PREFIX}1.log" "$LOG/slurmdbd.log" "$LOG/mariadb.log"; do
    [ -f "$f" ] && { echo "== last lines of $f"; tail -n 20 "$f"; }
  done
  exit 1
}
# A pid file's process alive? Zombies count as dead (PID 1 here may reap orphans only after a while).
alive() { local p; [ -s "$1" ] && p=$(cat "$1") && [ -r "/proc/$p/stat" ] && [ "$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)" != Z ]; }

[ "$(id -u)" = 0 ] || { echo "slurm_up.sh must run as root (it installs packages and starts daemons)" >&2; exit 1; }
[ "$NODES" -ge 1 ] && [ "$NODES" -le 50 ] || die "SLURM_CI_NODES must be 1..50"
[ "$GPUS" -ge 0 ] && [ "$GPUS" -le 16 ] || die "SLURM_CI_GPUS must be 0..16"

# ------------------------------------------------------------------------------------------- packages
pkgs=(munge slurmctld slurmd slurm-client procps)
bins=(munged slurmctld slurmd sbatch pgrep)
if [ "$ACCOUNTING" = 1 ]; then pkgs+=(slurmdbd mariadb-server); bins+=(slurmdbd mariadbd); fi
missing=0
for b in "${bins[@]}"; do [ -x "/usr/sbin/$b" ] || [ -x "/usr/bin/$b" ] || missing=1; done
if [ "$missing" = 1 ]; then
  say "installing ${pkgs[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  for _ in 1 2 3; do apt-get update -qq && break; sleep 5; done
  # No recommends: a handful of packages instead of ~40 (no docs, no PMIx, no X). Package scripts
  # that try to start services fail harmlessly without systemd; we start the daemons ourselves.
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null || die "apt-get install ${pkgs[*]} failed"
fi
say "packages present (slurm $(dpkg-query -W -f='${Version}' slurmctld))"

# ------------------------------------------------------------------------------------------- host names
HOST=$(hostname -s)
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts
# Rewrite in place (cat >, not sed -i): /etc/hosts may be a bind mount that cannot be renamed over.
hosts_new=$(grep -v '# slurm-ci$' /etc/hosts; for i in $(seq 1 "$NODES"); do echo "127.0.0.$((10 + i)) ${PREFIX}${i} # slurm-ci"; done)
[ "$hosts_new" = "$(cat /etc/hosts)" ] || printf '%s\n' "$hosts_new" > /etc/hosts

# ------------------------------------------------------------------------------------------- munge
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key   # munged refuses a readable key
install -d -m 0755 "$RUN"
if ! alive /run/munge/munged.pid; then
  runuser -u munge -- /usr/sbin/munged || die "munged failed to start (see /var/log/munge/munged.log)"
  echo munge >> "$RUN/started"
fi
munge -n | unmunge >/dev/null || die "munge round trip failed"
say "munged up"

# ------------------------------------------------------------------------------------------- config files
install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld "$LOG"
install -d -m 0755 /var/spool/slurmd /etc/slurm "$VAR" "$VAR/gpu"
for g in $(seq 0 $((GPUS - 1))); do
  # slurmd wants a character device (a plain file gives no CUDA_VISIBLE_DEVICES): a /dev/null clone,
  # or where mknod is refused (gVisor, some containers) a symlink to /dev/null, which passes its stat().
  [ -c "$VAR/gpu/nvidia$g" ] || { rm -f "$VAR/gpu/nvidia$g"; mknod -m 0666 "$VAR/gpu/nvidia$g" c 1 3 2>/dev/null || ln -sfn /dev/null "$VAR/gpu/nvidia$g"; }
done

if [ "$ACCOUNTING" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
  ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
GRES_LINE=""; [ "$GPUS" -gt 0 ] && GRES_LINE=" Gres=gpu:$GPUS"
# KillWait: seconds between SIGTERM and SIGKILL on scancel/requeue/time limit; jobs use them to stop
# their teacher servers and Ray processes. DefMemPerCPU: else one job takes a whole node's memory.
conf="# generated by scripts/slurm_up.sh (sdg); edit the script, not this file
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
SlurmdParameters=config_overrides
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
$ACCT
JobCompType=jobcomp/none
JobRequeue=1
MinJobAge=300
KillWait=10
InactiveLimit=0
Waittime=0
GresTypes=gpu
"
for i in $(seq 1 "$NODES"); do
  conf+="NodeName=${PREFIX}${i} NodeHostname=$HOST NodeAddr=127.0.0.$((10 + i)) Port=$((17000 + i)) CPUs=$CPUS RealMemory=$MEM${GRES_LINE} State=UNKNOWN
"
done
conf+="PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"
gres="AutoDetect=off
"
if [ "$GPUS" = 1 ]; then
  gres+="NodeName=${PREFIX}[1-$NODES] Name=gpu File=$VAR/gpu/nvidia0
"
elif [ "$GPUS" -gt 1 ]; then
  gres+="NodeName=${PREFIX}[1-$NODES] Name=gpu File=$VAR/gpu/nvidia[0-$((GPUS - 1))]
"
fi
changed=0
write_if_changed() {  # path content
  if [ ! -f "$1" ] || [ "$(cat "$1")" != "$(printf '%s' "$2")" ]; then printf '%s' "$2" > "$1"; changed=1; fi
}
write_if_changed /etc/slurm/slurm.conf "$conf"
write_if_changed /etc/slurm/gres.conf "$gres"
[ -f /etc/slurm/cgroup.conf ] && grep -q '^# generated by slurm' /etc/slurm/cgroup.conf && rm -f /etc/slurm/cgroup.conf
chmod 0644 /etc/slurm/slurm.conf /etc/slurm/gres.conf

# A changed config while daemons of the old one run: stop them and drop the controller state (old node
# names/ports in the saved state confuse a new controller). Job ids then restart at 1.
if [ "$changed" = 1 ]; then
  if alive /run/slurmctld.pid || compgen -G "/run/slurmd-*.pid" >/dev/null; then
    say "config changed: restarting the Slurm daemons with fresh state"
    SLURM_DOWN_KEEP_HELPERS=1 bash "$HERE/slurm_down.sh" >/dev/null 2>&1 || true
  fi
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
fi
say "config written (changed=$changed)"

# ------------------------------------------------------------------------------------------- accounting
if [ "$ACCOUNTING" = 1 ]; then
  install -d -o mysql -g mysql -m 0755 "$VAR/mysql"
  chown mysql:mysql "$RUN"   # our MariaDB's socket and pid live there
  if [ ! -d "$VAR/mysql/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$VAR/mysql" --auth-root-authentication-method=socket \
      --skip-test-db > "$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
  fi
  if ! mariadb-admin --no-defaults -S "$DBSOCK" ping >/dev/null 2>&1; then
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$VAR/mysql" --socket="$DBSOCK" \
      --port=$DBPORT --bind-address=127.0.0.1 --pid-file="$RUN/mysqld.pid" --log-error="$LOG/mariadb.log" \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 --skip-log-bin </dev/null >/dev/null 2>&1 &
    grep -qx mariadb "$RUN/started" 2>/dev/null || echo mariadb >> "$RUN/started"
    for _ in $(seq 1 300); do mariadb-admin --no-defaults -S "$DBSOCK" ping >/dev/null 2>&1 && break; sleep 0.1; done
    mariadb-admin --no-defaults -S "$DBSOCK" ping >/dev/null 2>&1 || die "mariadb did not start"
  fi
  mariadb --no-defaults -S "$DBSOCK" -uroot -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
    || die "could not create the accounting database"
  say "mariadb up (127.0.0.1:$DBPORT)"
  dbd="AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DBPORT
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
"
  outer=$changed; changed=0
  write_if_changed /etc/slurm/slurmdbd.conf "$dbd"
  chown slurm:slurm /etc/slurm/slurmdbd.conf; chmod 0600 /etc/slurm/slurmdbd.conf   # slurmdbd wants 0600
  if [ "$changed" = 1 ] && alive /run/slurmdbd.pid; then
    kill "$(cat /run/slurmdbd.pid)"
    for _ in $(seq 1 100); do alive /run/slurmdbd.pid || break; sleep 0.1; done
  fi
  changed=$outer
  alive /run/slurmdbd.pid || /usr/sbin/slurmdbd || die "slurmdbd failed to start"
  for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null && break; sleep 0.1; done
  (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null || die "slurmdbd not listening on 6819"
  say "slurmdbd up"
else
  [ -f /etc/slurm/slurmdbd.conf ] && rm -f /etc/slurm/slurmdbd.conf
fi

# ------------------------------------------------------------------------------------------- slurmctld + slurmds
alive /run/slurmctld.pid || /usr/sbin/slurmctld || die "slurmctld failed to start"
for i in $(seq 1 "$NODES"); do
  n=${PREFIX}${i}
  install -d -m 0755 "/var/spool/slurmd/$n"
  alive "/run/slurmd-$n.pid" || /usr/sbin/slurmd -N "$n" || die "slurmd -N $n failed to start"
done
say "daemons started, waiting for $NODES idle node(s)"

# ------------------------------------------------------------------------------------------- ready?
deadline=$(( $(date +%s) + TIMEOUT )); ready=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  states=$(sinfo -h -N -p "$PARTITION" -o '%N %t' 2>/dev/null || true)
  nready=$(echo "$states" | grep -cE ' (idle|mix|alloc)$' || true)
  if [ "$nready" = "$NODES" ]; then ready=1; break; fi
  # nodes left drained/down by an earlier unclean stop (a killed session): give them back
  bad=$(echo "$states" | awk '$2 ~ /drain|drng|down|fail/ && $2 !~ /\*/ {print $1}' | paste -sd, -)
  [ -n "$bad" ] && scontrol update NodeName="$bad" State=RESUME >/dev/null 2>&1 || true
  sleep 0.2
done
[ "$ready" = 1 ] || { sinfo -N -l || true; die "nodes not idle after ${TIMEOUT}s"; }
say "all $NODES node(s) up"
if [ "$ACCOUNTING" = 1 ]; then
  ok=0
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if sacct -n -X -S now >/dev/null 2>&1 && sacctmgr -n -P show cluster "$CLUSTER" format=ControlPort 2>/dev/null | grep -q '^6817$'; then ok=1; break; fi
    sleep 0.2
  done
  [ "$ok" = 1 ] || die "slurmctld did not register with slurmdbd (sacct would not work)"
  say "sacct works (cluster '$CLUSTER' registered)"
fi
timeout 60 srun -N "$NODES" -t 1 true || die "smoke test 'srun -N $NODES true' failed"
say "READY: partition $PARTITION, nodes $(sinfo -h -p "$PARTITION" -o %N), $CPUS CPUs / $MEM MB / $GPUS fake GPUs each, accounting=$ACCOUNTING"
cat <<EOF
Use it:
  sinfo -N -o '%N %t %G'                                   # nodes, states, GPUs
  srun -N 2 --gpus-per-node=1 bash -c 'echo \$SLURMD_NODENAME \$CUDA_VISIBLE_DEVICES'
  sdg data generate cluster=slurm cluster.nodes=2 cluster.gpus_per_node=$GPUS cluster.allow_cpu_teacher=true generate.output_dir=DIR
  sbatch -N 2 --gpus-per-node=$GPUS slurm/generate.sbatch generate.output_dir=DIR
  squeue; sacct -X; scancel JOBID                          # follow, history, cancel
  bash $HERE/slurm_down.sh [--purge]                         # stop (--purge: also state, logs, accounting DB)
Logs: $LOG/slurmctld.log, $LOG/slurmd-${PREFIX}N.log, $LOG/slurmdbd.log
EOF
