#!/usr/bin/env bash
# Starts sagan under OpenMPI's mpirun, on this node, on the hosts of a host file, or inside a
# Slurm allocation (launch/slurm/train.sbatch uses it when SAGAN_LAUNCHER=mpirun).
#
#   launch/mpirun.sh [OPTIONS] [--] SAGAN_ARGS...
#   launch/mpirun.sh train --config configs/imagenet128.toml            # one rank per GPU here
#   launch/mpirun.sh -N 2 train --config configs/fmnist32.toml          # CPU: 2 ranks, cores/2 threads each
#   launch/mpirun.sh --hostfile hosts -N 4 train --config configs/imagenet128.toml --resume
#   launch/mpirun.sh --hostfile hosts -N 4 --dry-run train --config ... # print the command and rank map
#
# Options:
#   -N, --ranks-per-node K  ranks on each node (default: the GPUs this node has, else 1;
#                           inside Slurm: the allocation's tasks per node)
#   -n, --np N              ranks in total (default: K x nodes; inside Slurm: SLURM_NTASKS)
#   --hostfile FILE         OpenMPI host file ("host slots=K" per line); default: this node, or
#                           the Slurm allocation when run inside one
#   --threads T             CPU threads per rank (default: SLURM_CPUS_PER_TASK, else this node's
#                           cores / K); also sets OMP_NUM_THREADS and `--set train.threads=T`
#   --mpirun-arg ARG        one more argument for mpirun (repeatable), e.g. --mpirun-arg=--mca ...
#   --bin PATH              the sagan binary (default: target/release/sagan of this repository)
#   --dry-run               print the mpirun command and, from mpirun's own mapper (nothing is
#                           started), which host, local rank, device and cores each rank gets
#
# Rank placement: ranks are numbered node by node (ranks 0..K-1 on the first host, K..2K-1 on
# the second, ...); a rank's local rank is its index on its node, and sagan uses CUDA device
# local_rank % (GPUs on the node). Each rank is bound to T cores of its own when K x T fits the
# node's cores; otherwise (more ranks than cores) nothing is bound and mpirun oversubscribes.
# Remote nodes are assumed to look like this one (cores); say --threads otherwise.
#
# Signals: SIGINT (Ctrl-C), SIGTERM, SIGHUP and SIGUSR1 to this script become one SIGUSR1 to
# mpirun, which forwards it to every rank: the ranks agree on a step, rank 0 writes a checkpoint
# and all exit 75 ("checkpointed, requeue me"), which this script returns. A second Ctrl-C kills
# the ranks at once. mpirun runs in its own session with SIGTERM blocked: on its own, mpirun
# answers SIGTERM/SIGINT by killing the ranks within 2 s (and cannot be told to forward them), and
# a batch system's SIGTERM to every process of a job (Slurm's time limit, cancellation,
# preemption) would otherwise cut the ranks' checkpoint short. The ranks themselves get SIGTERM
# unblocked and with default handling (OpenMPI resets it), so they still checkpoint on it.
# The exit status is mpirun's (the ranks' status: 0, 75, or the failure).
set -euo pipefail

say() { echo "launch/mpirun.sh: $*" >&2; }
die() {
  say "$*"
  exit 2
}
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${SAGAN_BIN:-$root/target/release/sagan}"
per_node="" np="" hostfile="" threads="" dry_run=0
extra=()
while (($#)); do
  case "$1" in
    -N | --ranks-per-node) per_node="${2:?}"; shift 2 ;;
    --ranks-per-node=*) per_node="${1#*=}"; shift ;;
    -n | --np) np="${2:?}"; shift 2 ;;
    --np=*) np="${1#*=}"; shift ;;
    --hostfile) hostfile="${2:?}"; shift 2 ;;
    --hostfile=*) hostfile="${1#*=}"; shift ;;
    --threads) threads="${2:?}"; shift 2 ;;
    --threads=*) threads="${1#*=}"; shift ;;
    --mpirun-arg) extra+=("${2:?}"); shift 2 ;;
    --mpirun-arg=*) extra+=("${1#*=}"); shift ;;
    --bin) bin="${2:?}"; shift 2 ;;
    --bin=*) bin="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
(($#)) || die "no sagan arguments (e.g. train --config configs/fmnist32.toml); see --help"
args=("$@")
for v in "$per_node" "$np" "$threads"; do
  [[ -z "$v" || "$v" =~ ^[1-9][0-9]*$ ]] || die "expected a positive integer, got '$v'"
done
[ -z "$hostfile" ] || [ -r "$hostfile" ] || die "cannot read host file $hostfile"
command -v mpirun >/dev/null || die "mpirun not found (Debian: apt-get install openmpi-bin)"
[ "$dry_run" = 1 ] || [ -x "$bin" ] || die "$bin is not an executable; build with cargo build --release (or --bin PATH)"

# Inside a Slurm allocation (and without a host file) mpirun takes the nodes from Slurm.
in_slurm=0
[ -z "$hostfile" ] && [ -n "${SLURM_JOB_ID:-}" ] && in_slurm=1

# GPUs this node offers: the visible ones if CUDA_VISIBLE_DEVICES is set, else nvidia-smi's.
gpus=0
if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
  IFS=, read -r -a visible <<<"$CUDA_VISIBLE_DEVICES"
  gpus=${#visible[@]}
elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  gpus="$(nvidia-smi -L | grep -c '^GPU')"
fi

# Physical cores usable here: logical CPUs in our affinity mask / hardware threads per core.
cores="$(nproc)"
tpc="$(lscpu 2>/dev/null | awk -F: '/^Thread\(s\) per core/ {gsub(/ /, "", $2); print $2}')"
[[ "$tpc" =~ ^[1-9][0-9]*$ ]] && cores=$((cores / tpc))
((cores >= 1)) || cores=1

if [ -z "$per_node" ]; then
  if [ "$in_slurm" = 1 ] && [ -n "${SLURM_NTASKS_PER_NODE:-}" ]; then
    per_node="$SLURM_NTASKS_PER_NODE"
  elif [ "$in_slurm" = 1 ] && [ -n "${SLURM_TASKS_PER_NODE:-}" ]; then
    per_node="${SLURM_TASKS_PER_NODE%%[(,]*}" # "4(x2)" or "4,3": the first node's count
  elif ((gpus > 0)); then
    per_node="$gpus"
  else
    per_node=1
  fi
fi
if [ -n "$hostfile" ]; then
  nodes="$(grep -Ev '^[[:space:]]*(#|$)' "$hostfile" | awk '{print $1}' | sort -u | wc -l)"
elif [ "$in_slurm" = 1 ]; then
  nodes="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"
  cores="${SLURM_CPUS_ON_NODE:-$cores}"
else
  nodes=1
fi
if [ -z "$np" ]; then
  if [ "$in_slurm" = 1 ] && [ -n "${SLURM_NTASKS:-}" ]; then np="$SLURM_NTASKS"; else np=$((per_node * nodes)); fi
fi
if [ -z "$threads" ]; then
  threads="${SLURM_CPUS_PER_TASK:-$((cores / per_node))}"
  ((threads >= 1)) || threads=1
fi

cmd=(mpirun)
# OpenMPI refuses root without this (containers, CI machines).
[ "$(id -u)" -eq 0 ] && cmd+=(--allow-run-as-root)
cmd+=(--np "$np")
[ -n "$hostfile" ] && cmd+=(--hostfile "$hostfile")
if ((per_node * threads <= cores)); then
  # K ranks per node, numbered node by node, each bound to its own T cores.
  cmd+=(--map-by "ppr:$per_node:node:PE=$threads" --bind-to core)
else
  # More ranks than cores: binding would stack ranks on the same cores; let the OS schedule.
  cmd+=(--map-by "ppr:$per_node:node" --bind-to none --oversubscribe)
fi

# Every rank (remote ones too) gets the launching environment that matters: libraries
# (libtorch, CUDA, NCCL), threads, NCCL and CUDA tuning, logging. Inside Slurm each node's
# CUDA_VISIBLE_DEVICES is that node's own allocation: never overwrite it with ours.
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
while IFS= read -r name; do
  case "$name" in
    CUDA_VISIBLE_DEVICES) [ "$in_slurm" = 1 ] && continue ;;
  esac
  cmd+=(-x "$name")
done < <(compgen -e | grep -E '^(PATH|LD_LIBRARY_PATH|OMP_NUM_THREADS|MKL_NUM_THREADS|RUST_BACKTRACE|RUST_LOG|NCCL_.*|CUDA_.*|TORCH_.*|SAGAN_.*)$' | sort)
cmd+=("${extra[@]}" "$bin" "${args[@]}")
# sagan's own thread count wins over OMP_NUM_THREADS: set it unless the arguments already do.
if printf '%s\n' "${args[@]}" | grep -qx -- '--config' &&
  ! printf '%s\n' "${args[@]}" | grep -q '^train\.threads='; then
  cmd+=(--set "train.threads=$threads")
fi

if [ "$dry_run" = 1 ]; then
  echo "mpirun command:"
  printf ' %q' "${cmd[@]}"
  echo
  # mpirun's own mapper, asked to place the ranks without starting anything.
  map="$("${cmd[0]}" --do-not-launch --display-devel-map "${cmd[@]:1}" 2>&1 || true)"
  table="$(awk -v gpus="$gpus" '
    /Data for node:/ { host = $4 }
    /Local rank:/ {
      for (i = 1; i <= NF; i++) {
        if ($i == "Local" && $(i + 1) == "rank:") local_rank = $(i + 2)
        if ($i == "App" && $(i + 1) == "rank:") rank = $(i + 2)
      }
      device = gpus > 0 ? "cuda:" (local_rank % gpus) : "cpu"
      pending = 1
    }
    /Binding:/ && pending {
      printf "%-6s %-20s %-11s %-8s %s\n", rank, host, local_rank, device, $2
      pending = 0
    }' <<<"$map" | sort -n)"
  if [ "$(grep -c . <<<"$table")" -ne "$np" ]; then
    say "mpirun could not map $np ranks:"
    echo "$map" >&2
    exit 1
  fi
  echo "rank map (from mpirun --do-not-launch; $threads thread(s) per rank):"
  printf '%-6s %-20s %-11s %-8s %s\n' rank host local_rank device cores
  echo "$table"
  exit 0
fi

say "$np rank(s), $per_node per node, $threads thread(s) each"
# Block SIGTERM in mpirun where the system allows (coreutils >= 8.31 `env`, else perl).
block=()
if env --block-signal=TERM true 2>/dev/null; then
  block=(env --block-signal=TERM)
elif perl -MPOSIX -e 1 2>/dev/null; then
  block=(perl -MPOSIX -e 'sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGTERM)) or die; exec @ARGV or die "exec: $!"')
else
  say "warning: cannot block SIGTERM for mpirun (no env --block-signal, no perl); a SIGTERM to every process (Slurm time limit) kills the ranks 2 s later"
fi
# Own session: a Ctrl-C in the terminal reaches this script only, not mpirun (which would kill
# the ranks). No stdin: nothing reads it, and a detached reader of the terminal would steal input.
setsid "${block[@]}" "${cmd[@]}" </dev/null &
mpirun_pid=$!

# shellcheck source=launch/wait-child.sh
source "$root/launch/wait-child.sh"
interrupts=0
caught=0
# shellcheck disable=SC2317 # called from the traps below
relay() {
  caught=$((caught + 1))
  if [ "$1" = INT ]; then
    interrupts=$((interrupts + 1))
    if ((interrupts >= 2)); then
      say "second SIGINT: killing the ranks now (no checkpoint)"
      # The ranks are mpirun's children (their daemons, on other hosts, die with mpirun).
      pkill -KILL -P "$mpirun_pid" 2>/dev/null || true
      kill -KILL "$mpirun_pid" 2>/dev/null || true
      return 0
    fi
  fi
  # Once: mpirun forwards each SIGUSR1 to the ranks, and one that reaches a process already
  # shutting down kills it (a batch system's SIGTERM and the batch shell's relay come together).
  if ((caught > 1)); then
    say "SIG$1: the ranks were already asked to checkpoint and stop; waiting for them"
    return 0
  fi
  say "SIG$1: asking every rank to checkpoint and stop (exit 75)${2:+; $2}"
  kill -USR1 "$mpirun_pid" 2>/dev/null || true
}
trap 'relay INT "Ctrl-C again kills them at once"' INT
trap 'relay TERM' TERM
trap 'relay HUP' HUP
trap 'relay USR1' USR1

wait_child "$mpirun_pid"
exit "$rc"
