#!/usr/bin/env bash
# One prepared run on a GPU machine that has pip torch 2.11.0 (and its NCCL wheel) but no Rust
# toolchain and no network: runs the carried, stripped release binary against that machine's own
# libtorch, and answers every CUDA question at once. Builds nothing. Writes under $OUT (default
# gpu-check-out/) even when a step fails:
#   gpu-check.json, gpu-check.md   `sagan gpu-check`: CUDA vs CPU training, bf16, throughput at
#                                  32 and 128 px, checkpoint/resume, overlap hooks, NCCL, memory
#   mfu.json (appended to the .md) model FLOP utilisation against the GPU's dense bf16 peak
#   gpu-check.log                  everything printed
# Exit code: 0 pass, 1 a check failed, 2 cannot start, 3 no CUDA here (the checks then ran on the
# CPU, which tests this script: tests/gpu_check.rs).
#   launch/gpu-check.sh [extra args for `sagan gpu-check`, e.g. --steps 20]
# Env: SAGAN_BIN (default target/release/sagan), PYTHON (default python3), SAGAN_DATA (the
# Fashion-MNIST IDX files, default .cache/fashion-mnist, used when /usr/share/datasets lacks
# them), SAGAN_GPU_TIMING (1: also time sagan against PyTorch eager on this GPU; 0: skip),
# SAGAN_STEP_TIMEOUT (seconds per timing run, default 120).
# Prepare here, where Rust and the data exist (no libmpi on the GPU machine, hence no `mpi` feature):
#   cargo build --release --no-default-features --target-dir target/gpu && strip -o target/release/sagan-gpu target/gpu/release/sagan
#   mkdir -p .cache/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .cache/fashion-mnist/
# then run with SAGAN_BIN=target/release/sagan-gpu, carrying target/release/sagan-gpu and .cache/fashion-mnist.
# `sagan gpu-check` runs twice where NCCL is found both ways (src/distributed/nccl/): first as users
# get it (libnccl.so.2, already loaded by libtorch), then through cudarc's own loader, which only
# looks for `libnccl.so` and so gets a symlink of that name on LD_LIBRARY_PATH.
set -u
cd "$(dirname "$0")/.." || exit 2
BIN=${SAGAN_BIN:-target/release/sagan}
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT" || exit 2
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
T0=$(date +%s)
rc=0
cuda=1
step() { printf '\n== [%ss] %s\n' "$(($(date +%s) - T0))" "$*"; }

step "binary: $BIN"
if [ ! -x "$BIN" ]; then
    echo "FAIL: no executable $BIN; build it elsewhere (cargo build --release), strip it, carry it here"
    exit 2
fi
ls -l "$BIN"

step "torch (via $PY)"
if ! TORCH_DIR=$("$PY" -c 'import torch,os;print(os.path.dirname(torch.__file__))'); then
    echo "FAIL: $PY cannot import torch"
    exit 2
fi
"$PY" -c 'import torch;print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| devices", torch.cuda.device_count())'
# pip layout: site-packages/{torch,nvidia/nccl/lib}
NCCL_DIR="$(dirname "$TORCH_DIR")/nvidia/nccl/lib"
if [ -e "$NCCL_DIR/libnccl.so.2" ]; then
    echo "NCCL: $NCCL_DIR/libnccl.so.2"
else
    echo "WARN: no $NCCL_DIR/libnccl.so.2; relying on the system's NCCL"
    NCCL_DIR=
fi
export LD_LIBRARY_PATH="$TORCH_DIR/lib${NCCL_DIR:+:$NCCL_DIR}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}

step "nvidia-smi"
GPU_NAME=
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv || rc=1
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
else
    echo "no nvidia-smi: no NVIDIA driver here"
    cuda=0
fi

step "shared libraries the binary cannot find"
if ldd "$BIN" | grep 'not found'; then rc=1; else echo "none"; fi

DATA=${SAGAN_DATA:-.cache/fashion-mnist}
data=()
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -d "$DATA" ]; then
    data=(--set "data.path=$DATA")
fi

step "sagan gpu-check --out $OUT $* (NCCL: libnccl.so.2 as libtorch loaded it)"
"$BIN" gpu-check --out "$OUT" ${data[@]+"${data[@]}"} "$@"
case $? in
    0) ;;
    3) cuda=0 ;;
    *) echo "FAIL: sagan gpu-check"; rc=1 ;;
esac

if [ "$cuda" = 1 ] && [ -n "$NCCL_DIR" ]; then
    LINKS=$(mktemp -d) && trap 'rm -rf "$LINKS"' EXIT
    ln -s "$NCCL_DIR/libnccl.so.2" "$LINKS/libnccl.so"
    mkdir -p "$OUT/cudarc-loader"
    step "sagan gpu-check (NCCL: cudarc's loader, libnccl.so -> $NCCL_DIR/libnccl.so.2), NCCL and hooks only"
    LD_LIBRARY_PATH="$LINKS:$LD_LIBRARY_PATH" "$BIN" gpu-check --out "$OUT/cudarc-loader" --steps 1 \
        ${data[@]+"${data[@]}"} "$@" || { echo "FAIL: exit $?"; rc=1; }
fi

# FLOPs per training iteration, counted by PyTorch's FlopCounterMode on the same model
# (bench/torch_sagan.py), for the utilisation figure; then sagan against PyTorch eager on this
# GPU, one process each, alternating. Apart from the verdict.
small=(--set eval.enabled=false)
large=("${small[@]}" --set model.resolution=128 --set 'model.g_attn_res=[32]' --set 'model.d_attn_res=[32]')
resolve() { # resolve NAME ARGS...: the resolved config the checks trained, for torch_sagan.py
    local name=$1; shift
    "$BIN" show-config --config configs/fmnist32.toml ${data[@]+"${data[@]}"} "$@" >"$OUT/$name.toml"
}
if [ "$cuda" = 1 ]; then
    STEP_TIMEOUT=${SAGAN_STEP_TIMEOUT:-120}
    for size in 32 128; do
        if [ "$size" = 32 ]; then resolve config32 "${small[@]}"; else resolve config128 "${large[@]}"; fi
        step "FLOPs per iteration at $size px"
        timeout "$STEP_TIMEOUT" "$PY" bench/torch_sagan.py "$OUT/config$size.toml" --flops --device cuda --steps 1 --warmup 0 \
            | tail -n 1 >"$OUT/flops$size.json" || echo "WARN: FLOP count at $size px failed"
        cat "$OUT/flops$size.json"
    done
    if [ "${SAGAN_GPU_TIMING:-1}" = 1 ]; then
        timing() {
            step "timing against PyTorch: $*"
            SAGAN_PYTHON="$PY" timeout "$STEP_TIMEOUT" "$PY" bench/side_by_side.py --sagan "$BIN" --device cuda \
                --modes 1x1 --rounds 1 --warmup 5 --steps 20 --configs fmnist32 \
                ${data[@]+"${data[@]}"} "$@" || echo "WARN: timing failed or timed out (exit $?)"
        }
        timing
        timing --torch-args "--autocast bf16" --set 'train.autocast="bf16"'
        timing "${large[@]}"
        timing "${large[@]}" --torch-args "--autocast bf16" --set 'train.autocast="bf16"'
    fi
fi

step "model FLOP utilisation"
GPU_NAME="$GPU_NAME" OUT="$OUT" "$PY" - <<'EOF' || echo "WARN: no utilisation figure"
import json, os
out = os.environ["OUT"]
name = os.environ.get("GPU_NAME", "")
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, FLOP/s.
PEAKS = [("H200", 989e12), ("H100 SXM", 989e12), ("H100 80GB HBM3", 989e12), ("H100 NVL", 835e12),
         ("H100 PCIe", 756e12), ("H100", 756e12), ("A100", 312e12), ("L40S", 362e12)]
peak = next((p for key, p in PEAKS if key in name), None)
report = json.load(open(os.path.join(out, "gpu-check.json")))
rows = {}
for c in report["checks"]:
    if c["name"].startswith("throughput_") and c["status"] == "pass":
        f = c["figures"]
        try:
            flops = json.load(open(os.path.join(out, f"flops{f['resolution']}.json")))["flops_per_iter"]
        except (OSError, ValueError, KeyError):
            continue
        achieved = flops / f["batch"] * f["images_per_second"]
        rows[c["name"]] = {"flops_per_iter": flops, "achieved_tflops": achieved / 1e12,
                           "mfu": achieved / peak if peak else None}
mfu = {"gpu": name, "peak_dense_bf16_flops": peak, "rows": rows}
json.dump(mfu, open(os.path.join(out, "mfu.json"), "w"), indent=2)
lines = [f"\n## Model FLOP utilisation\n\nDenominator: {name or 'no GPU'}, dense bf16 peak "
         f"{peak / 1e12:.0f} TFLOP/s (NVIDIA datasheet)\n" if peak else
         f"\n## Model FLOP utilisation\n\nNo dense bf16 peak known for {name or 'this machine (no GPU)'}\n"]
for k, r in rows.items():
    m = f"{100 * r['mfu']:.2f} %" if r["mfu"] is not None else "n/a"
    lines.append(f"- {k}: {r['flops_per_iter'] / 1e9:.1f} GFLOP/iteration, {r['achieved_tflops']:.2f} TFLOP/s, MFU {m}")
with open(os.path.join(out, "gpu-check.md"), "a") as md:
    md.write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

step "result"
if [ "$rc" -ne 0 ]; then
    echo "gpu-check: FAIL"
elif [ "$cuda" = 0 ]; then
    echo "gpu-check: NO CUDA (the checks ran on the CPU; see $OUT/gpu-check.md)"
    rc=3
else
    echo "gpu-check: PASS"
fi
exit "$rc"
