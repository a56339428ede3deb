#!/usr/bin/env bash
# The gradient all-reduce between two "nodes" (tests/infra/nodes.sh: network namespaces on a
# bridge) over a link limited to RATE, with and without `dist.overlap`: one rank per node,
# `sagan bench-train` in alternating order, printing images/s and the share of the step spent in
# the all-reduce (waiting for the other rank included). Root only; `tc` with the tbf qdisc.
#
#   bench/overlap_nodes.sh [--rate 200mbit] [--config configs/cifar10_32.toml] [--rounds 3]
#                          [--steps 3] [--bucket-mb 1] [--out FILE] [--set KEY=VALUE]...
#
# --out appends each run's figures as a JSON line with its setting (overlap, bucket_mb,
# link_bits_per_s): `sagan scaling-model --steps FILE` checks the scaling model against them.
#
# A CIFAR-10 config trains on synthetic binaries (bench/side_by_side.py's). Overlap needs several
# buckets per network: Fashion-MNIST's G has 0.4 MiB of gradients, CIFAR-10's 17 MiB.
set -euo pipefail
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "$self")/.."

args=("$@")
rate=200mbit config=configs/cifar10_32.toml rounds=3 steps=3 bucket_mb=1 sets=() inside=0 out=""
while (($#)); do
  case "$1" in
    --inside-nodes) inside=1; shift ;;
    --rate) rate="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --bucket-mb) bucket_mb="$2"; shift 2 ;;
    --out) out="$(realpath -m "$2")"; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "overlap_nodes.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
bin="$PWD/target/release/sagan"
[ -x "$bin" ] || { echo "overlap_nodes.sh: build first (cargo build --release)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if ((!inside)); then
  echo "overlap_nodes.sh: $config, link $rate each way, buckets of $bucket_mb MiB, $rounds rounds"
  # Runs this script again inside the nodes' lifetime: `run` removes them however it ends.
  exec tests/infra/nodes.sh run --name ovbench --nodes 2 -- bash "$self" --inside-nodes "${args[@]}"
fi

case "$config" in
  *cifar*)
    data=$(mktemp -d)
    trap 'rm -rf "$data"' EXIT
    python3 -c "import sys, pathlib; sys.path.insert(0, 'bench'); import side_by_side as s; s.synthetic_cifar(pathlib.Path(sys.argv[1]))" "$data"
    sets+=(--set "data.path=$data") ;;
esac

# Inside `nodes.sh run`: its environment names the nodes (SAGAN_NODES_*).
measure() {
  # Both directions: each root-side veth port limits what the bridge sends into its node.
  for k in 1 2; do
    v="SAGAN_NODES_VETH_$k"
    tc qdisc replace dev "${!v}" root tbf rate "$rate" burst 256kb latency 100ms
  done
  mapfile -t margs < "$SAGAN_NODES_DIR/mpirun-args"
  for round in $(seq 1 "$rounds"); do
    variants=("false" "true")
    ((round % 2)) || variants=("true" "false")
    for overlap in "${variants[@]}"; do
      # --bind-to none: otherwise each node's daemon binds its rank to "its" core 0, which is
      # the same core of this machine for both nodes (docs/scaling.md).
      # mpi_yield_when_idle: with overlap a rank's all-reduce thread waits beside its backward
      # pass on the same core; spinning, it would take that core from the backward pass.
      line=$(mpirun "${margs[@]}" --hostfile "$SAGAN_NODES_HOSTFILE" -np 2 --map-by node --bind-to none \
        --mca mpi_yield_when_idle 1 \
        -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM \
        "$bin" bench-train --config "$PWD/$config" --steps "$steps" --warmup 1 \
        --set train.threads=1 --set dist.bucket_mb="$bucket_mb" --set dist.overlap="$overlap" \
        "${sets[@]}" 2>/dev/null | tail -1)
      python3 - "$round" "$overlap" "$line" "$bucket_mb" "$rate" "$out" <<'PY'
import json, sys
r, overlap, line, bucket_mb, rate, out = sys.argv[1:]
d = json.loads(line)
if out:
    scale = {"gbit": 1e9, "mbit": 1e6}
    bits = next(float(rate[:-4]) * m for u, m in scale.items() if rate.endswith(u))
    d.update(overlap=overlap == "true", bucket_mb=float(bucket_mb), link_bits_per_s=bits)
    with open(out, "a") as f:
        f.write(json.dumps(d) + "\n")
share = ", ".join(f"{s * 100:.1f}" for s in d["allreduce_share_per_rank"])
print(f"round {r} overlap={overlap:5}: {d['images_per_s']:7.2f} images/s, median step "
      f"{d['median_step_s'] * 1000:6.0f} ms, all-reduce {share} % of the step (ranks 0, 1)")
PY
    done
  done
}
measure
