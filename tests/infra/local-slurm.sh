#!/usr/bin/env bash
# A throwaway single-node Slurm cluster on this machine, for the tests (tests/slurm.rs) and for
# trying launch/slurm/train.sbatch by hand. Needs root and Debian's slurm-wlm, slurmctld, slurmd,
# slurm-client and munge packages (scripts/setup.sh installs them); no systemd.
#
#   tests/infra/local-slurm.sh start DIR   # start munged, slurmctld and slurmd; state under DIR
#   export SLURM_CONF=DIR/slurm.conf          # then sbatch, squeue, scontrol, scancel talk to it
#   tests/infra/local-slurm.sh stop DIR    # stop exactly the daemons that `start DIR` started
#
# Everything lives under DIR (config, munge key and socket, state, spool, logs, pid files) and the
# two ports are picked free at start, so several instances (tests running in parallel, other users
# of the machine) never share state. The system's /etc/slurm and /etc/munge are not touched.
# `start` stops what it started if it fails half-way; `stop` waits until the daemons are gone.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
action="$1"
mkdir -p "$2"
dir="$(cd "$2" && pwd)"

# Stops the daemon whose pid is in $1, if it is still the daemon we started (pids are reused).
stop_daemon() {
  local f="$1" pid n
  [ -s "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null && grep -qE 'munged|slurmctld|slurmd' "/proc/$pid/comm" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # slurmctld and slurmd save state on SIGTERM; give them 10 s, then SIGKILL.
    for ((n = 0; n < 100; n++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop() {
  stop_daemon "$dir/slurmd.pid"
  kill_jobs
  stop_daemon "$dir/slurmctld.pid"
  stop_daemon "$dir/munged.pid"
}

kill_jobs() {
  local pid
  # Job processes outlive slurmd (stopping it does not end running jobs): kill every
  # slurmstepd of this cluster (slurmd gives them SLURM_CONF=<this dir>/slurm.conf) and all
  # their descendants (batch shells, srun, mpirun, ranks).
  local victims=() ppid comm
  declare -A children=()
  while read -r pid ppid comm; do
    children[$ppid]+=" $pid"
    if [ "$comm" = slurmstepd ] &&
      tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$dir/slurm.conf"; then
      victims+=("$pid")
    fi
  done < <(ps -e -o pid=,ppid=,comm=)
  local i=0
  while [ "$i" -lt "${#victims[@]}" ]; do
    # shellcheck disable=SC2206 # the children lists are space-separated pids
    victims+=(${children[${victims[$i]}]:-})
    i=$((i + 1))
  done
  if ((${#victims[@]})); then
    kill -KILL "${victims[@]}" 2>/dev/null || true
  fi
}

# A TCP port no socket uses now (random, so parallel instances rarely even try the same one).
# Below Linux's ephemeral range (32768-60999 by default), so that no client connection (mpirun's,
# a finished test's in TIME_WAIT) can hold it by the time slurmctld binds it.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12768))
    if ! ss -Htan "sport = :$port" | grep -q .; then
      echo "$port"
      return
    fi
  done
}

start() {
  local host node_line ctld_port slurmd_port
  for cmd in munged slurmctld slurmd sbatch scontrol ss; do
    command -v "$cmd" >/dev/null || {
      echo "local-slurm: $cmd not found (install slurm-wlm slurmctld slurmd slurm-client munge)" >&2
      exit 1
    }
  done
  [ "$(id -u)" -eq 0 ] || {
    echo "local-slurm: must run as root (SlurmUser=root, munged with its own key)" >&2
    exit 1
  }
  if [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    echo "local-slurm: already running in $dir" >&2
    exit 1
  fi
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/tmp"
  # If anything below fails, do not leave half a cluster behind.
  trap 'stop' ERR

  # munged with its own key and socket, so it neither needs nor disturbs a system munge.
  head -c 1024 /dev/urandom >"$dir/munge.key"
  chmod 0400 "$dir/munge.key"
  # --force: the key and socket live under a temp dir whose parent (/tmp) is world-writable.
  munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed"

  # slurmctld insists that SlurmctldHost is this machine's short host name; the address is
  # loopback so nothing depends on DNS. If the host name does not resolve, localhost does.
  host="$(hostname -s)"
  getent hosts "$host" >/dev/null || host=localhost
  # This machine's real topology, so slurmd accepts the node definition.
  node_line="$(slurmd -C | head -n 1 | sed -E "s/^NodeName=[^ ]+/NodeName=$host/")"
  ctld_port="$(free_port)"
  slurmd_port="$(free_port)"
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port="$(free_port)"; done

  cat >"$dir/slurm.conf" <<EOF
# Written by tests/infra/local-slurm.sh; everything under $dir.
ClusterName=local$$
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
# Our own munged; cred_expire is also how long a requeued job waits before it may start again.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
TmpFS=$dir/tmp
# No cgroups needed (containers, no systemd): processes tracked by parent pid, no binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Debian's OpenMPI speaks PMIx only (srun --mpi=pmi2 fails).
MpiDefault=pmix
MailProg=/bin/true
ReturnToService=2
# Short waits so tests are quick: the scheduler runs every second (a requeued job starts soon after
# its cred_expire delay), SIGKILL comes 10 s after SIGTERM at a time limit or cancellation.
SchedulerParameters=sched_interval=1
KillWait=10
InactiveLimit=0
MinJobAge=600
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

  # PMIx puts each step's client directory under /tmp by default, named by job and step id only:
  # two clusters (or a killed step's leftovers) would collide at job 1, step 0.
  mkdir -p "$dir/pmix"
  echo "PMIxCliTmpDirBase=$dir/pmix" >"$dir/mpi.conf"

  # -D keeps them in the foreground so $! is the daemon; output goes to files (never to the
  # caller's pipes, which would keep e.g. a test's Command::output() waiting forever).
  SLURM_CONF="$dir/slurm.conf" slurmctld -D -i -f "$dir/slurm.conf" \
    >"$dir/log/slurmctld.out" 2>&1 </dev/null &
  echo $! >"$dir/slurmctld.pid"
  SLURM_CONF="$dir/slurm.conf" slurmd -D -N "$host" -f "$dir/slurm.conf" \
    >"$dir/log/slurmd.out" 2>&1 </dev/null &
  echo $! >"$dir/slurmd.pid"

  # Wait until the node accepts jobs (usually about a second): at most 30 s by the clock (sinfo
  # itself can wait long for a controller that is not there), and not at all once a daemon died.
  local state="" deadline=$((SECONDS + 30)) daemon
  while ((SECONDS < deadline)); do
    state="$(SLURM_CONF="$dir/slurm.conf" timeout 3 sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)"
    case "$state" in idle | mixed | allocated) break ;; esac
    for daemon in slurmctld slurmd; do
      kill -0 "$(cat "$dir/$daemon.pid")" 2>/dev/null || state="$daemon exited"
    done
    case "$state" in *exited) break ;; esac
    sleep 0.1
  done
  case "$state" in
    idle | mixed | allocated) ;;
    *)
      echo "local-slurm: node not ready (state '$state'; at most 30 s); logs in $dir/log:" >&2
      tail -n 20 "$dir/log/"*.log >&2 || true
      stop
      exit 1
      ;;
  esac
  trap - ERR
  echo "export SLURM_CONF=$dir/slurm.conf"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
