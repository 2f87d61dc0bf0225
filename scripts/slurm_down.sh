#!/usr/bin/env bash
# slurm_down.sh - stop the local cluster that scripts/slurm_up.sh started. Kills by pid file, never by name.
#   bash scripts/slurm_down.sh          cancel every job, stop the slurmds, slurmctld, slurmdbd, and the
#                                       MariaDB/munged that slurm_up.sh itself started (ones it found running stay)
#   bash scripts/slurm_down.sh --purge  also delete controller/slurmd state, logs and the accounting database
# SLURM_DOWN_KEEP_HELPERS=1 stops only the Slurm daemons (slurm_up.sh uses it when the config changed).
set -uo pipefail
RUN=/run/slurm-ci
VAR=/var/lib/slurm-ci
[ "$(id -u)" = 0 ] || { echo "slurm_down.sh must run as root" >&2; exit 1; }

running() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }  # zombies are gone
stop_pidfile() {  # pidfile expected-comm
  local f=$1 comm=$2 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  # only the process the pid file names, and only if it still is that program (pids get reused)
  if running "$pid" && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$comm" ]; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then echo "  $comm ($pid) ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$pid"; fi
    echo "stopped $comm (pid $pid)"
  fi
  rm -f "$f"
}

# 1. cancel every job, so no job step outlives its slurmd
if [ -s /run/slurmctld.pid ] && running "$(cat /run/slurmctld.pid)"; then
  jobs=$(squeue -h -o %A 2>/dev/null | paste -sd' ' -)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    for _ in $(seq 1 150); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
    echo "cancelled jobs: $jobs"
  fi
fi
# 2. the Slurm daemons, by their own pid files
for f in /run/slurmd-*.pid; do [ -e "$f" ] && stop_pidfile "$f" slurmd; done
stop_pidfile /run/slurmctld.pid slurmctld
stop_pidfile /run/slurmdbd.pid slurmdbd
left=$(for p in $(pgrep -x slurmstepd 2>/dev/null); do running "$p" && echo "$p"; done | paste -sd' ' -)
[ -n "$left" ] && echo "warning: slurmstepd still running: $left (steps that ignored scancel)"

# 3. the helpers, only those slurm_up.sh started
if [ "${SLURM_DOWN_KEEP_HELPERS:-0}" != 1 ]; then
  grep -qx mariadb "$RUN/started" 2>/dev/null && stop_pidfile "$RUN/mysqld.pid" mariadbd
  grep -qx munge "$RUN/started" 2>/dev/null && stop_pidfile /run/munge/munged.pid munged
  rm -f "$RUN/started"
fi

if [ "${1:-}" = "--purge" ]; then
  rm -rf /var/spool/slurmctld/* /var/spool/slurmd/* /var/log/slurm/*
  hosts_new=$(grep -v '# slurm-ci$' /etc/hosts)
  [ "$hosts_new" = "$(cat /etc/hosts)" ] || printf '%s\n' "$hosts_new" > /etc/hosts
  # the private accounting database, only when its server is down
  [ -s "$RUN/mysqld.pid" ] || rm -rf "$VAR/mysql"
  echo "purged state, logs and the accounting database"
fi
exit 0
