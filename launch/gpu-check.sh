#!/usr/bin/env bash
# GPU smoke check for a machine with pip torch 2.11.0 (and its NCCL wheel) but no Rust toolchain:
# runs the carried, stripped release binary against that machine's own libtorch.
#   launch/gpu-check.sh [extra args for `sagan gpu-check`]
# Env: SAGAN_BIN (default target/release/sagan), PYTHON (default python3), SAGAN_DATA (a copy of
# the Fashion-MNIST IDX files, default .cache/fashion-mnist, used when /usr/share/datasets lacks them),
# SAGAN_GPU_TIMING (1: also time sagan against PyTorch eager on the GPU, fp32 and bf16; 0: skip).
# `sagan gpu-check` itself trains the config as given, then the same under bf16 autocast.
# Prepare here, where Rust and the data exist (no libmpi on the GPU machine, hence no `mpi` feature):
#   cargo build --release --no-default-features --target-dir target/gpu && strip -o target/release/sagan-gpu target/gpu/release/sagan
#   mkdir -p .cache/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .cache/fashion-mnist/
# then run with SAGAN_BIN=target/release/sagan-gpu, carrying target/release/sagan-gpu and .cache/fashion-mnist.
# Runs `sagan gpu-check` twice, once per way sagan finds NCCL (src/dist/nccl.rs): first as users
# get it (libnccl.so.2, already loaded by libtorch), then through cudarc's own loader, which
# only looks for `libnccl.so` and so gets a symlink of that name on LD_LIBRARY_PATH.
set -u
cd "$(dirname "$0")/.." || exit 2
BIN=${SAGAN_BIN:-target/release/sagan}
PY=${PYTHON:-python3}
rc=0
step() { printf '\n== %s\n' "$*"; }

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

step "nvidia-smi -L"
nvidia-smi -L || { echo "FAIL: nvidia-smi"; rc=1; }

step "shared libraries the binary cannot find"
ldd "$BIN" | grep 'not found' && rc=1 || echo "none"

step "binary starts"
if ! out=$("$BIN" --help 2>&1); then
    printf '%s\n' "$out"
    echo "FAIL: $BIN does not start"
    exit 1
fi
printf '%s\n' "$out" | head -n 1

if ! "$BIN" gpu-check --help >/dev/null 2>&1; then
    step "sagan gpu-check"
    echo "SKIP: this sagan has no \`gpu-check\` subcommand yet; the checks above are all that ran"
    exit "$rc"
fi

DATA=${SAGAN_DATA:-.cache/fashion-mnist}
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -d "$DATA" ]; then
    set -- --set "data.path=$DATA" "$@"
fi

step "sagan gpu-check $* (NCCL: libnccl.so.2 as libtorch loaded it)"
"$BIN" gpu-check "$@" || { echo "FAIL: exit $?"; rc=1; }

if [ -n "$NCCL_DIR" ]; then
    LINKS=$(mktemp -d) && trap 'rm -rf "$LINKS"' EXIT
    ln -s "$NCCL_DIR/libnccl.so.2" "$LINKS/libnccl.so"
    step "sagan gpu-check $* (NCCL: cudarc's loader, libnccl.so -> $NCCL_DIR/libnccl.so.2)"
    LD_LIBRARY_PATH="$LINKS:$LD_LIBRARY_PATH" "$BIN" gpu-check "$@" || { echo "FAIL: exit $?"; rc=1; }
fi

# Timing, last and apart from the verdict: sagan against the same model in PyTorch eager on this
# GPU (bench/side_by_side.py, one process each, alternating), fp32 on both sides, then both
# under bf16 autocast. SAGAN_GPU_TIMING=0 skips it.
if [ "${SAGAN_GPU_TIMING:-1}" = 1 ]; then
    timing() {
        step "timing: $*"
        SAGAN_PYTHON="$PY" "$PY" bench/side_by_side.py --sagan "$BIN" --device cuda --modes 1x1 \
            --rounds 2 --warmup 10 --steps 40 "$@" || echo "WARN: timing failed (exit $?)"
    }
    fm=()
    if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -d "$DATA" ]; then
        fm=(--set "data.path=$DATA")
    fi
    timing --configs fmnist32,cifar10_32 ${fm[@]+"${fm[@]}"}
    timing --configs cifar10_32 --torch-args "--autocast bf16" --set 'train.autocast="bf16"'
fi

step "result"
if [ "$rc" -eq 0 ]; then echo "gpu-check: PASS"; else echo "gpu-check: FAIL"; fi
exit "$rc"
