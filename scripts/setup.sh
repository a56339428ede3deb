#!/usr/bin/env bash
# Installs everything sagan needs, idempotently: Debian packages, then libtorch (torch wheel) in a
# project-local venv. A second run checks and returns in seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
torch_version="2.11.0"

# slurm-wlm .. munge, iproute2 (ss) and procps (ps): the single-node Slurm that tests/slurm.rs
# starts (tests/infra/local-slurm.sh); shellcheck lints the launch scripts; iproute2 (ip, tc),
# util-linux (unshare) and iptables: the namespace "nodes" of tests/nodes.rs (tests/infra/).
# libturbojpeg0-dev: the JPEG decoder of ImageFolder datasets (libjpeg-turbo, as Pillow uses).
# libtcmalloc-minimal4: the allocator CPU tensors use by default (train.host_memory).
apt_packages=(build-essential pkg-config python3-venv libopenmpi-dev openmpi-bin libclang-dev
  libturbojpeg0-dev libtcmalloc-minimal4 dataset-fashion-mnist slurm-wlm slurmctld slurmd slurm-client munge iproute2 procps
  shellcheck util-linux iptables)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (https://rustup.rs) and re-run" >&2
  exit 1
fi

python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import torch, safetensors, tensorboard, PIL, pytorch_fid, torch_fidelity, scipy, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
  echo "setup: installing torch==$torch_version into $venv (about 5 GB, a few minutes)"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "torch==$torch_version" numpy safetensors tensorboard pillow "pytorch-fid==0.3.0" "torch-fidelity==0.4.0" scipy
fi
# A fixed path for .cargo/config.toml, whatever the Python minor version.
torch_dir="$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
# Resolved, so a venv reached through a symlink (a worktree sharing it) still links to where it is.
ln -sfn "$(cd "$torch_dir" && pwd -P)" "$venv/libtorch"
echo "setup: ok ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
