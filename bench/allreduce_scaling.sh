#!/usr/bin/env bash
# The measurements behind the scaling model (docs/scaling.md): the gradient all-reduce, as
# training runs it (`sagan bench-allreduce --json`: buckets of dist.bucket_mb, then one raw
# MPI_Allreduce of the same bytes), between 2, 4 and 8 network-namespace nodes
# (tests/infra/nodes.sh, one rank per node) over links limited by tc's tbf to each RATE, for
# several payloads (the Fashion-MNIST default's G and D at widths CH) and bucket sizes, and with
# extra link latency (nodes.sh delay) on small payloads, where latency is what shows.
# One JSON line per measurement goes to OUT; `sagan scaling-model --measurements OUT` fits the
# model to them. Root only; about 15 minutes with the defaults on 2 cores.
#
#   bench/allreduce_scaling.sh [--out runs/scaling/allreduce.jsonl] [--ranks "2 4 8"]
#       [--rates "100mbit 400mbit none"] [--ch "32 64"] [--bucket-mb "0.25 1 4"]
#       [--delays-ms "1 3"] [--iters 5]
#
# "none" leaves the links unlimited: the all-reduce is then as fast as this machine's cores move
# bytes through the bridge, which is the software ceiling the model's second term describes.
set -euo pipefail
self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "$self")/.."

args=("$@")
out=runs/scaling/allreduce.jsonl ranks="2 4 8" rates="100mbit 400mbit none" chs="32 64"
bucket_mbs="0.25 1 4" delays="1 3" iters=5 inside=0
while (($#)); do
  case "$1" in
    --inside-nodes) inside=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --rates) rates="$2"; shift 2 ;;
    --ch) chs="$2"; shift 2 ;;
    --bucket-mb) bucket_mbs="$2"; shift 2 ;;
    --delays-ms) delays="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    *) echo "allreduce_scaling.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
bin="$PWD/target/release/sagan"
[ -x "$bin" ] || { echo "allreduce_scaling.sh: build first (cargo build --release)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if ((!inside)); then
  mkdir -p "$(dirname "$out")"
  : >"$out"
  for n in $ranks; do
    echo "allreduce_scaling.sh: $n nodes, one rank each" >&2
    # `run` removes the nodes however the inner script ends.
    tests/infra/nodes.sh run --name arscale --nodes "$n" -- \
      bash "$self" --inside-nodes "${args[@]}" --ranks "$n" --out "$out"
  done
  echo "allreduce_scaling.sh: $(wc -l <"$out") measurements in $out" >&2
  exit 0
fi

# Inside `nodes.sh run`: its environment names the nodes (SAGAN_NODES_*); $ranks is one number.
n="$ranks"
mapfile -t margs <"$SAGAN_NODES_DIR/mpirun-args"
limit() {
  local k v
  for k in $(seq 1 "$n"); do
    v="SAGAN_NODES_VETH_$k"
    if [ "$1" = none ]; then
      tc qdisc del dev "${!v}" root 2>/dev/null || true
    else
      # Each root-side port limits what the bridge sends into its node: every node's inbound
      # link runs at RATE, which is the ring's per-link bandwidth.
      tc qdisc replace dev "${!v}" root tbf rate "$1" burst 256kb latency 200ms
    fi
  done
}
delay() {
  local k
  for k in $(seq 1 "$n"); do
    if [ "$1" = 0 ]; then
      tests/infra/nodes.sh undelay --name arscale "node$k" 2>/dev/null
    else
      tests/infra/nodes.sh delay --name arscale "node$k" "$1" 2>/dev/null
    fi
  done
}
bits_per_s() {
  case "$1" in
    none) echo 0 ;;
    *gbit) echo $((${1%gbit} * 1000000000)) ;;
    *mbit) echo $((${1%mbit} * 1000000)) ;;
    *) echo "allreduce_scaling.sh: rate '$1': NNNmbit, NNgbit or none" >&2; exit 2 ;;
  esac
}
measure() { # RATE DELAY_MS CH BUCKET_MB
  local line
  # --bind-to none: each node's daemon would bind its rank to "its" core 0, the same core for
  # every node on this machine, and the ranks would take turns on it (24 ms per all-reduce).
  # mpi_yield_when_idle: 4 or 8 "nodes" share 2 cores, and a rank that spins waiting for its
  # ring neighbour holds a core until the scheduler takes it away (4 ranks, 2.3 MB in 14
  # buckets: 200 ms spinning, 21 ms yielding). Nodes with their own cores need neither.
  line=$(mpirun "${margs[@]}" --hostfile "$SAGAN_NODES_HOSTFILE" -np "$n" --map-by node --bind-to none \
    --mca mpi_yield_when_idle 1 \
    -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM \
    "$bin" bench-allreduce --json --iters "$iters" --config "$PWD/configs/fmnist32.toml" \
    --set train.threads=1 --set model.g_ch="$3" --set model.d_ch="$3" \
    --set dist.bucket_mb="$4" 2>/dev/null | grep "^{" | tail -1)
  [ -n "$line" ] || {
    echo "allreduce_scaling.sh: no figures from bench-allreduce ($n ranks, $1, ch $3, $4 MiB)" >&2
    exit 1
  }
  python3 - "$1" "$(bits_per_s "$1")" "$2" "$3" "$line" >>"$out" <<'PY'
import json, sys
rate, bps, delay_ms, ch, line = sys.argv[1:]
d = json.loads(line)
d.update(rate=rate, link_bits_per_s=int(bps), delay_ms=float(delay_ms), ch=int(ch))
print(json.dumps(d))
print(f"  {d['ranks']} ranks, {rate:>8}, delay {delay_ms} ms, {d['bytes'] / 1e6:6.2f} MB in "
      f"{d['buckets']:3} buckets: {d['bucketed_s'] * 1e3:8.1f} ms (raw {d['raw_s'] * 1e3:8.1f} ms)",
      file=sys.stderr)
PY
}

for rate in $rates; do
  limit "$rate"
  for ch in $chs; do
    for mb in $bucket_mbs; do measure "$rate" 0 "$ch" "$mb"; done
  done
done
# Latency: the smallest payload in many small buckets, links unlimited, each link delayed.
limit none
for ms in $delays; do
  delay "$ms"
  for mb in 0.05 0.25; do measure none "$ms" 8 "$mb"; done
  delay 0
done
measure none 0 8 0.05
measure none 0 8 0.25
