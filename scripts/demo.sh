#!/usr/bin/env bash
# The main job: installs what it needs, builds, and trains the Fashion-MNIST default on the CPU
# with 2 ranks under mpirun (one thread each). Extra arguments go to `sagan train`
# (e.g. --set train.steps=100). Each run starts over in runs/fmnist32 (--overwrite), unless the
# arguments say --resume.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo build --release --bin sagan
# The feature network of the default's FID/IS, trained once (a few minutes) and kept in .cache/.
[ -f .cache/fmnist_classifier.safetensors ] || ./target/release/sagan train-classifier
# OpenMPI refuses to run as root without these (containers, CI); harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
start=(--overwrite)
for a in "$@"; do [ "$a" = --resume ] && start=(); done
# mpirun gives every rank a pseudo-terminal, so only this script knows whether a person watches:
# then rank 0 redraws a progress line; in a log (CI) only the plain lines every log_every steps.
progress=plain
[ -t 1 ] && progress=line
mpirun --oversubscribe -np 2 ./target/release/sagan train --config configs/fmnist32.toml \
  --set output.progress="$progress" "${start[@]}" "$@"
