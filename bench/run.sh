#!/usr/bin/env bash
# Training throughput on this machine: 1 rank x 2 threads against 2 ranks x 1 thread on the default
# config, the scaling efficiency, and the gradient all-reduce bandwidth next to a raw MPI_Allreduce.
# Usage: bench/run.sh [steps]   (figures are medians over the steps after the first 5)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
steps="${1:-40}"
bash scripts/setup.sh >/dev/null
cargo build --release --bin sagan -q
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out="$(mktemp -d)"
common=(--config configs/fmnist32.toml --set "train.steps=$steps" --set train.sample_every=0 --set "train.log_every=$steps")
./target/release/sagan train "${common[@]}" --set train.threads=2 --set "output.dir=$out/one" >/dev/null
mpirun --oversubscribe -np 2 ./target/release/sagan train "${common[@]}" --set train.threads=1 --set "output.dir=$out/two" >/dev/null
"$root/.venv/bin/python" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
one = json.load(open(f"{out}/one/summary.json"))
two = json.load(open(f"{out}/two/summary.json"))
batch = one["global_batch"]
r1 = batch / one["median_step_seconds"]
r2 = batch / two["median_step_seconds"]
print(f"1 rank x 2 threads: {r1:.1f} images/s (median step {one['median_step_seconds']*1e3:.0f} ms, global batch {batch})")
print(f"2 ranks x 1 thread: {r2:.1f} images/s (median step {two['median_step_seconds']*1e3:.0f} ms, global batch {batch})")
print(f"scaling efficiency (2 ranks vs 1 rank, same cores): {r2 / r1 * 100:.0f}%")
PY
mpirun --oversubscribe -np 2 ./target/release/sagan bench-allreduce --config configs/fmnist32.toml --set train.threads=1
mpirun --oversubscribe -np 2 ./target/release/sagan bench-allreduce --config configs/fmnist32.toml --set train.threads=1 --set model.g_ch=128 --set model.d_ch=128
rm -rf "$out"
