#!/usr/bin/env bash
# launch/slurm/train.sbatch on a multi-node Slurm in network namespaces (tests/infra/local-slurm.sh
# start DIR --nodes N): NODES x PER_NODE ranks of the Fashion-MNIST default through srun --mpi=pmix,
# then the job's median step, images/s and all-reduce share, and the bytes each node's link carried.
# The 8-rank run (4 nodes x 2) is too slow for the test suite on 2 cores; this is its bench.
# Root only. Every node shares this machine's cores, so the figures say what the launch and the
# links cost, not what separate machines would do.
#
#   bench/slurm_nodes.sh [--nodes 4] [--per-node 2] [--steps 30] [--set KEY=VALUE]...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
nodes=4 per_node=2 steps=30 sets=()
while (($#)); do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --per-node) per_node="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "slurm_nodes.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
root="$PWD"
bin="$root/target/release/sagan"
[ -x "$bin" ] || { echo "slurm_nodes.sh: build first (cargo build --release)" >&2; exit 1; }
dir="$(mktemp -d /tmp/sagan-bench-slurm-XXXXXX)"
submit="$dir/submit"
mkdir -p "$submit"
ln -s "$PWD/launch" "$submit/launch"
trap 'bash tests/infra/local-slurm.sh stop "$dir/cluster" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
bash tests/infra/local-slurm.sh start "$dir/cluster" --nodes "$nodes" >/dev/null
export SLURM_CONF="$dir/cluster/slurm.conf" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# shellcheck disable=SC1091 # written by local-slurm.sh
. "$dir/cluster/nodes-env"
link_bytes() {
  local k veth total=0
  for k in $(seq 1 "$nodes"); do
    veth="SAGAN_NODES_VETH_$k"
    total=$((total + $(cat "/sys/class/net/${!veth}/statistics/tx_bytes")))
  done
  echo "$total"
}
before="$(link_bytes)"
t0=$SECONDS
id="$(cd "$submit" && SAGAN_BIN="$bin" SAGAN_LAUNCHER=srun sbatch --parsable -J bench \
  --nodes="$nodes" --ntasks-per-node="$per_node" --cpus-per-task=1 --time=30 \
  "$root/launch/slurm/train.sbatch" --config "$root/configs/fmnist32.toml" \
  --set train.steps="$steps" --set train.log_every=10 --set eval.enabled=false \
  --set train.sample_every=0 --set train.checkpoint_every=0 "${sets[@]}")"
while :; do
  state="$(scontrol show job -o "$id" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)"
  case "$state" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL) break ;; esac
  sleep 1
done
wall=$((SECONDS - t0))
after="$(link_bytes)"
log="$submit/slurm-bench-$id.out"
[ "$state" = COMPLETED ] || { echo "slurm_nodes.sh: the job ended $state:" >&2; tail -n 30 "$log" >&2; exit 1; }
grep -m1 "rank(s) on" "$log"
summary="$submit/runs/bench/summary.json"
"${SAGAN_PYTHON:-python3}" - "$summary" "$nodes" "$per_node" "$steps" "$wall" "$((after - before))" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
nodes, per_node, steps, wall, sent = sys.argv[2:]
print(json.dumps({
    "nodes": int(nodes), "ranks_per_node": int(per_node), "world": s["world_size"],
    "steps": int(steps), "global_batch": s["global_batch"],
    "median_step_s": round(s["median_step_seconds"], 4),
    "images_per_s": round(s["images_per_second"], 1),
    "allreduce_share": round(s["allreduce_share"], 3),
    "link_bytes_sent_per_step": int(sent) // int(steps),
    "job_wall_s": int(wall),
}))
PY
