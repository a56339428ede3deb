#!/usr/bin/env bash
# Builds docker/Dockerfile on a Debian 12 base made here and trains in the image: proof that the
# image works, on a machine without a registry (nothing is pulled) and without GPUs.
#
#   bash docker/smoke.sh [--keep]
#
# 1. installs docker.io and debootstrap when missing (apt), builds sagan (scripts/setup.sh, cargo);
# 2. debootstraps Debian 12 (`--variant=minbase bookworm`) and `docker import`s it as the base;
# 3. starts dockerd (vfs storage, no iptables or bridge of its own) when none answers, and stops
#    what it started at the end;
# 4. builds the image with that base as BASE (`--network host`: apt and pip reach their mirrors);
# 5. runs a short 2-rank training in it under mpirun and checks that it wrote the weights (G, D,
#    G_ema safetensors) and TensorBoard events that TensorBoard reads back;
# 6. prints the time of each phase and the image size, then removes the images (--keep keeps
#    them: sagan-smoke:<id> and its base).
# Root only (dockerd, debootstrap). Disk: about 6 GB while it runs (vfs copies every layer).
set -euo pipefail

say() { echo "smoke: $*" >&2; }
die() {
  say "$*"
  exit 1
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
keep=0
for a in "$@"; do
  case "$a" in
    --keep) keep=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $a (see --help)" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (dockerd, debootstrap)"

t_start=$SECONDS
phase_start=$SECONDS
times=()
phase() {
  times+=("$1: $((SECONDS - phase_start)) s")
  say "$1 done in $((SECONDS - phase_start)) s"
  phase_start=$SECONDS
}

# --- 1. packages and the binary -----------------------------------------------------------------
missing=()
for p in docker.io debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  # Without systemd, apt would start dockerd itself (init.d) with its default storage driver;
  # this script starts its own, so services stay down while installing.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
bash scripts/setup.sh
cargo build --release --bin sagan
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/sagan"
[ -x "$bin" ] || die "no $bin after cargo build"
phase "packages and build"

# The CLI of the docker.io package speaks the daemon's API version and builds with the classic
# builder (a newer CLI elsewhere on PATH may want buildx).
docker_cli="$(command -v /usr/bin/docker || command -v docker)"
docker() { DOCKER_BUILDKIT=0 "$docker_cli" "$@"; }

work="$(mktemp -d /var/tmp/sagan-smoke.XXXXXX)"
id="$(basename "$work" | sed 's/^sagan-smoke\.//' | tr '[:upper:]' '[:lower:]')"
base="sagan-smoke-base:$id"
image="sagan-smoke:$id"
dockerd_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$keep" = 0 ] && "$docker_cli" info >/dev/null 2>&1; then
    "$docker_cli" rmi -f "$image" "$base" >/dev/null 2>&1 || true
  fi
  if [ -n "$dockerd_pid" ]; then
    say "stopping the dockerd this script started"
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$dockerd_pid" 2>/dev/null && say "dockerd ($dockerd_pid) did not stop; see $work/dockerd.log"
  fi
  # The container wrote as root; the rootfs holds device nodes: plain rm -rf handles both.
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 2. the Debian 12 base ----------------------------------------------------------------------
mirror="${SAGAN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
say "debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  die "debootstrap failed: $(tail -5 "$work/debootstrap.log")"
phase "debootstrap"

# --- 3. dockerd ---------------------------------------------------------------------------------
if "$docker_cli" info >/dev/null 2>&1; then
  say "using the running dockerd"
else
  command -v dockerd >/dev/null || die "dockerd not found"
  # vfs works on any file system; builds and runs use the host's network, so dockerd needs
  # neither its bridge nor iptables rules (which would also set FORWARD's policy to DROP).
  dockerd --storage-driver=vfs --iptables=false --bridge=none --log-level=warn >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 120); do
    "$docker_cli" info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || die "dockerd exited: $(tail -5 "$work/dockerd.log")"
    sleep 0.5
  done
  "$docker_cli" info >/dev/null 2>&1 || die "dockerd did not answer within 60 s"
  say "started dockerd ($dockerd_pid, storage driver vfs)"
fi
tar -C "$work/rootfs" -c . | docker import - "$base" >/dev/null
rm -rf "$work/rootfs"
phase "dockerd and import"

# --- 4. the image -------------------------------------------------------------------------------
# A copy of what the Dockerfile takes from the repository (as its .dockerignore selects), plus
# this machine's extra CA certificates for pip (docker/ca/README.md).
ctx="$work/context"
mkdir -p "$ctx/target/release"
cp -r docker configs launch .dockerignore "$ctx/"
cp "$bin" "$ctx/target/release/sagan"
find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$ctx/docker/ca/" \; 2>/dev/null || true
say "building $image on $base"
if ! docker build --network host --build-arg "BASE=$base" -t "$image" -f "$ctx/docker/Dockerfile" "$ctx" >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log" >&2
  die "docker build failed"
fi
size="$(docker image inspect -f '{{.Size}}' "$image")"
phase "docker build"

# --- 5. a 2-rank run inside ---------------------------------------------------------------------
out="$work/out"
mkdir -p "$out"
steps=20
say "2-rank training in the image"
if ! docker run --rm --network host --shm-size=1g -v "$out:/out" "$image" \
  mpirun --allow-run-as-root --oversubscribe -np 2 \
  sagan train --config configs/fmnist32.toml \
  --set "train.steps=$steps" --set train.log_every=5 --set train.threads=1 \
  --set model.g_ch=16 --set model.d_ch=16 --set model.z_dim=32 --set train.batch_size=16 \
  --set eval.enabled=false --set output.dir=/out/run >"$work/run.log" 2>&1; then
  cat "$work/run.log" >&2
  die "training in the image failed"
fi
run="$out/run"
grep -q "sagan: 2 rank(s) on 1 host(s)" "$work/run.log" || die "no 2-rank start-up line: $(cat "$work/run.log")"
grep -q "backend mpi" "$work/run.log" || die "not the MPI backend: $(cat "$work/run.log")"
for w in G D G_ema; do
  f="$run/$w.safetensors"
  [ -s "$f" ] || die "no $f"
  # safetensors: an 8-byte header length, then the JSON header.
  [ "$(head -c 9 "$f" | tail -c 1)" = "{" ] || die "$f is not a safetensors file"
done
events=("$run"/events.out.tfevents.*)
[ -s "${events[0]}" ] || die "no TensorBoard event file in $run"
"$root/.venv/bin/python" - "$run" "$steps" <<'PY' || die "TensorBoard could not read the event file"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1])
acc.Reload()
steps = [e.step for e in acc.Scalars("loss/G")]
assert steps and steps[-1] == int(sys.argv[2]), steps
print(f"smoke: TensorBoard reads {len(acc.Tags()['scalars'])} scalar tags, loss/G up to step {steps[-1]}")
PY
grep -q "\"steps\": $steps" "$run/summary.json" || die "summary.json does not say $steps steps"
phase "2-rank run"

echo "smoke: OK: image $image, $(awk -v b="$size" 'BEGIN {printf "%.2f GB", b / 1e9}') ($size bytes)"
for t in "${times[@]}"; do echo "smoke:   $t"; done
echo "smoke:   total: $((SECONDS - t_start)) s"
if [ "$keep" = 1 ]; then echo "smoke: kept $image and $base"; fi
