#!/usr/bin/env bash
# A throwaway single-node Slurm cluster on this machine, for the tests (tests/slurm.rs) and for
# trying launch/slurm/train.sbatch by hand. Needs root and Debian's slurm-wlm, slurmctld, slurmd,
# slurm-client and munge packages (scripts/setup.sh installs them); no systemd.
#
#   tests/infra/local-slurm.sh start DIR   # start munged, slurmctld and slurmd; state under DIR
#   export SLURM_CONF=DIR/slurm.conf          # then sbatch, squeue, scontrol, scancel talk to it
#   tests/infra/local-slurm.sh stop DIR    # stop exactly the daemons that `start DIR` started
#
#   tests/infra/local-slurm.sh start DIR --nodes N   # N (2 to 9) nodes in network namespaces
#
# With --nodes, tests/infra/nodes.sh makes a head and N nodes (network namespaces on a bridge,
# their own addresses and host names, node1..nodeN): slurmctld runs on the head, one slurmd on
# each node (NodeName=nodeK, NodeAddr its address, its own spool, pid and log files, and its own
# mpi.conf: PMIx's client directories are named by job and step only, so nodes sharing one would
# collide). munged is shared (its socket is a file, and the namespaces share the file system, as
# nodes share a cluster file system). `stop DIR` stops the daemons, the jobs and the nodes.
# DIR/nodes-env then holds the nodes' variables (SAGAN_NODES_NAME, SAGAN_NODES_ADDR_k, ...).
#
# Two partitions over all nodes: debug (the default) and urgent, whose jobs preempt debug's
# (partition_prio, PreemptMode=REQUEUE, GraceTime=60 s on debug).
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
[ $# -eq 2 ] || [ $# -eq 4 ] || usage
action="$1"
mkdir -p "$2"
dir="$(cd "$2" && pwd)"
nodes=0
if [ $# -eq 4 ]; then
  { [ "$action" = start ] && [ "$3" = --nodes ]; } || usage
  [[ "$4" =~ ^[2-9]$ ]] || {
    echo "local-slurm: --nodes: 2 to 9" >&2
    exit 2
  }
  nodes="$4"
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

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
  local f
  for f in "$dir/slurmd.pid" "$dir"/slurmd-node*.pid; do
    [ -e "$f" ] && stop_daemon "$f"
  done
  kill_jobs
  stop_daemon "$dir/slurmctld.pid"
  stop_daemon "$dir/munged.pid"
  # The nodes last: removing them kills whatever still runs in them.
  if [ -s "$dir/nodes-name" ]; then
    bash "$here/nodes.sh" down --name "$(cat "$dir/nodes-name")" >/dev/null 2>&1 || true
    rm -f "$dir/nodes-name"
  fi
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
      tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qE "^SLURM_CONF=$dir/(node[0-9]/)?slurm.conf$"; then
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

  ctld_port="$(free_port)"
  slurmd_port="$(free_port)"
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port="$(free_port)"; done
  local ctld_line node_lines daemon_files k name=""
  if ((nodes)); then
    # The nodes, under a name of at most 12 of [a-z0-9] that is this DIR's own.
    local attrs addr_var
    name="s$(printf '%s' "$dir" | cksum | cut -d' ' -f1)"
    bash "$here/nodes.sh" up --name "$name" --nodes "$nodes" >/dev/null
    echo "$name" >"$dir/nodes-name"
    cp "${SAGAN_NODES_STATE:-/run/sagan-nodes}/$name/env" "$dir/nodes-env"
    # shellcheck disable=SC1091 # written by nodes.sh up
    . "$dir/nodes-env"
    ctld_line="SlurmctldHost=head($SAGAN_NODES_HEAD_ADDR)"
    # Every node claims this machine's CPUs: they share them, as the namespaces share its cores.
    attrs="$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //')"
    node_lines=""
    for k in $(seq 1 "$nodes"); do
      addr_var="SAGAN_NODES_ADDR_$k"
      node_lines+="NodeName=node$k NodeAddr=${!addr_var} $attrs State=UNKNOWN"$'\n'
    done
    daemon_files="SlurmdSpoolDir=$dir/spool-%n
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmdLogFile=$dir/log/slurmd-%n.log"
  else
    # slurmctld insists that SlurmctldHost is this machine's short host name; the address is
    # loopback so nothing depends on DNS. If the host name does not resolve, localhost does.
    host="$(hostname -s)"
    getent hosts "$host" >/dev/null || host=localhost
    ctld_line="SlurmctldHost=$host(127.0.0.1)"
    # This machine's real topology, so slurmd accepts the node definition.
    node_line="$(slurmd -C | head -n 1 | sed -E "s/^NodeName=[^ ]+/NodeName=$host/")"
    node_lines="$node_line NodeAddr=127.0.0.1 State=UNKNOWN"$'\n'
    daemon_files="SlurmdSpoolDir=$dir/spool
SlurmdPidFile=$dir/slurmd.pid
SlurmdLogFile=$dir/log/slurmd.log"
  fi

  cat >"$dir/slurm.conf" <<EOF
# Written by tests/infra/local-slurm.sh; everything under $dir.
ClusterName=local$$
$ctld_line
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
# Job ids of their own (the port is this cluster's alone while it runs): OpenMPI names its
# shared-memory segments in /dev/shm by host name and job, so two clusters' job 2 on their
# "node1"s would share one and crash each other's ranks.
FirstJobId=$((ctld_port * 100))
SlurmUser=root
SlurmdUser=root
# Our own munged; cred_expire is also how long a requeued job waits before it may start again.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmctldPidFile=$dir/slurmctld.pid
SlurmctldLogFile=$dir/log/slurmctld.log
$daemon_files
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
SchedulerParameters=sched_interval=1,preempt_send_user_signal
KillWait=10
InactiveLimit=0
MinJobAge=600
# Preemption as clusters with a scavenger queue have it: a job in "urgent" takes the nodes of
# "debug" jobs, which get the grace time to stop (their --signal at once:
# preempt_send_user_signal, in SchedulerParameters above) and are requeued by Slurm.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
${node_lines}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF

  # PMIx puts each step's client directory under /tmp by default, named by job and step id only:
  # two clusters (or a killed step's leftovers) would collide at job 1, step 0.
  mkdir -p "$dir/pmix"
  echo "PMIxCliTmpDirBase=$dir/pmix" >"$dir/mpi.conf"

  # -D keeps them in the foreground so $! is the daemon; output goes to files (never to the
  # caller's pipes, which would keep e.g. a test's Command::output() waiting forever).
  if ((nodes)); then
    # nsenter, not `ip netns exec`: that one mounts a fresh /sys without /sys/fs/cgroup, and
    # slurmd will not start without it. Each program execs the next: $! is the daemon.
    # shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
    SLURM_CONF="$dir/slurm.conf" nsenter --net="/run/netns/$name-head" unshare --uts \
      sh -c 'hostname "$0" && exec "$@"' head slurmctld -D -i -f "$dir/slurm.conf" \
      >"$dir/log/slurmctld.out" 2>&1 </dev/null &
    echo $! >"$dir/slurmctld.pid"
    for k in $(seq 1 "$nodes"); do
      # A node's own copy of the config, beside its own mpi.conf (read from slurm.conf's directory).
      mkdir -p "$dir/node$k" "$dir/pmix-node$k" "$dir/spool-node$k"
      cp "$dir/slurm.conf" "$dir/node$k/slurm.conf"
      echo "PMIxCliTmpDirBase=$dir/pmix-node$k" >"$dir/node$k/mpi.conf"
      # shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
      SLURM_CONF="$dir/node$k/slurm.conf" nsenter --net="/run/netns/$name-node$k" unshare --uts \
        sh -c 'hostname "$0" && exec "$@"' "node$k" slurmd -D -N "node$k" -f "$dir/node$k/slurm.conf" \
        >"$dir/log/slurmd-node$k.out" 2>&1 </dev/null &
      echo $! >"$dir/slurmd-node$k.pid"
    done
  else
    SLURM_CONF="$dir/slurm.conf" slurmctld -D -i -f "$dir/slurm.conf" \
      >"$dir/log/slurmctld.out" 2>&1 </dev/null &
    echo $! >"$dir/slurmctld.pid"
    SLURM_CONF="$dir/slurm.conf" slurmd -D -N "$host" -f "$dir/slurm.conf" \
      >"$dir/log/slurmd.out" 2>&1 </dev/null &
    echo $! >"$dir/slurmd.pid"
  fi

  # Wait until every node accepts jobs (usually a second or two): at most 30 s by the clock
  # (sinfo itself can wait long for a controller that is not there), and not at all once a daemon
  # has died.
  local want=$((nodes > 0 ? nodes : 1)) ready=0 states="" deadline=$((SECONDS + 30)) f
  while ((SECONDS < deadline)); do
    states="$(SLURM_CONF="$dir/slurm.conf" timeout 3 sinfo -h -N -p debug -o '%T' 2>/dev/null | tr '\n' ' ' || true)"
    ready=0
    for f in $states; do
      case "$f" in idle | mixed | allocated) ready=$((ready + 1)) ;; esac
    done
    ((ready < want)) || break
    for f in "$dir"/slurmctld.pid "$dir"/slurmd*.pid; do
      kill -0 "$(cat "$f")" 2>/dev/null || states="$(basename "$f" .pid) exited"
    done
    case "$states" in *exited) break ;; esac
    sleep 0.1
  done
  if ((ready < want)); then
    echo "local-slurm: $ready of $want node(s) ready (states '$states'; at most 30 s); logs in $dir/log:" >&2
    tail -n 20 "$dir/log/"*.log >&2 || true
    stop
    exit 1
  fi
  trap - ERR
  echo "export SLURM_CONF=$dir/slurm.conf"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
