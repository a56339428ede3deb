#!/usr/bin/env bash
# The main job: installs what it needs, builds, and trains the Fashion-MNIST default on the CPU.
# Extra arguments go to `sagan train` (e.g. --set train.steps=100).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo build --release --bin sagan
./target/release/sagan train --config configs/fmnist32.toml "$@"
