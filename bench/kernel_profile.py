"""Where the step's time goes, sagan against the PyTorch implementation, by kind of kernel.

    .venv/bin/python bench/kernel_profile.py [--config fmnist32] [--threads 2] [--steps 60] [--freq 499]
        [--sagan target/release/sagan] [--bin NAME=OTHER_BINARY ...]

Runs each implementation once under `perf record` (one process, `--threads` intra-op threads, the
same resolved config), then sorts every sample by the function it landed in, into the groups
below, and prints the share of each group and its CPU milliseconds per step (all threads; share x sampled CPU time
/ steps; the few seconds before the first step, Python's imports included, fall under "other").
libtorch's kernels are the same on both sides: a group that costs more on one side shows work
that side asks for and the other does not (a layout conversion, a copy, a wake-up).

Needs `perf` (Debian: linux-perf) and permission to sample (root, or kernel.perf_event_paranoid <= 1).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from side_by_side import last_json, resolve_config, synthetic_cifar

ROOT = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("SAGAN_PYTHON", str(ROOT / ".venv/bin/python"))

# First match wins: the groups, and the function names (or libraries) that belong to them.
GROUPS = [
    ("waiting: OpenMP barriers, futex wake-ups", r"libgomp|GOMP_|futex|try_to_wake_up|finish_task_switch|"
     r"_raw_spin_unlock|schedule|__sched|native_queued_spin|do_syscall|entry_SYSCALL"),
    ("page faults, malloc, zeroing pages", r"clear_page|do_anonymous_page|handle_mm_fault|exc_page_fault|"
     r"asm_exc_page_fault|__handle_mm|_int_malloc|_int_free|malloc|free|munmap|mmap|memset_orig|"
     r"alloc_pages|get_page_from_freelist|unmap|release_pages|free_unref"),
    ("convolutions (oneDNN, its JIT code)", r"dnnl|mkldnn|onednn|brgemm|jit_|\[JIT\]|convolution|conv_"),
    ("matrix products (BLAS: linear, bmm)", r"sgemm|gemm|mkl_blas|blas|bmm|addmm"),
    ("batch norm", r"batch_norm"),
    ("pooling and upsampling", r"pool|upsample"),
    ("copies and layout changes", r"direct_copy|copy_kernel|copy_|reorder|permute|contiguous|cat_"),
    ("ReLU and its gradient", r"threshold|clamp_min|relu"),
    ("other elementwise (add, mul, div, tanh, fill)", r"add_kernel|mul_kernel|div_|tanh|fill|sqrt|where|"
     r"lerp|addcmul|addcdiv|sub_kernel|neg|exp|sigmoid|pow"),
    ("reductions and softmax", r"softmax|reduce|sum|norm|mean|dot"),
    ("memcpy", r"memcpy|memmove"),
]


def perf_samples(cmd, freq, out):
    run = subprocess.run(["perf", "record", "-q", "-F", str(freq), "-o", str(out), "--", *cmd],
                         check=True, capture_output=True, text=True)
    step_s = last_json(run.stdout)["median_step_s"]
    return (*read_samples(out), step_s)


def read_samples(out):
    """(share %, library, function) of every function sampled, and the CPU ms sampled in all."""
    report = subprocess.run(["perf", "report", "-i", str(out), "--no-children", "-F", "sample,dso,sym",
                             "--stdio", "-g", "none"], capture_output=True, text=True, check=True).stdout
    # cpu-clock samples: the event count is CPU nanoseconds, all threads together.
    m = re.search(r"# Event count \(approx\.\): (\d+)", report)
    cpu_ms = int(m.group(1)) / 1e6 if m else 0.0
    # Sample counts, not rounded percentages: oneDNN's JIT code spreads over thousands of addresses.
    counts = []
    for line in report.splitlines():
        m = re.match(r"\s+(\d+)\s+(.+?)\s+\[[.k]\]\s+(.*)", line)
        if m:
            counts.append((int(m.group(1)), m.group(2), m.group(3)))
    total = sum(c for c, _, _ in counts) or 1
    rows = [(c * 100.0 / total, dso, sym) for c, dso, sym in counts]
    return rows, cpu_ms


def group_of(dso, sym):
    text = f"{dso} {sym}"
    for name, pattern in GROUPS:
        if re.search(pattern, text):
            return name
    return "other (dispatch, autograd, Python, start-up)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="fmnist32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--freq", type=int, default=499)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap.add_argument("--sagan", default=str(target / "release/sagan"))
    ap.add_argument("--bin", action="append", default=[], metavar="NAME=PATH")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sagan-profile-"))
    config = ROOT / "configs" / f"{args.config}.toml"
    sets = ["eval.enabled=false", f"output.dir={tmp}/out", f"train.threads={args.threads}"]
    if args.config.startswith("cifar"):  # not on this machine: synthetic binaries, as side_by_side.py
        (tmp / "cifar").mkdir()
        synthetic_cifar(tmp / "cifar")
        sets.append(f"data.path={tmp / 'cifar'}")
    setargs = [a for s in sets for a in ("--set", s)]
    resolved = resolve_config(args.sagan, config, setargs, tmp / "resolved.toml")
    impls = [("sagan", [args.sagan, "bench-train", "--config", str(config), *setargs,
                        "--warmup", "2", "--steps", str(args.steps)])]
    for b in args.bin:
        name, path = b.split("=", 1)
        impls.append((name, [path, *impls[0][1][1:]]))
    impls.append(("pytorch", [PYTHON, str(ROOT / "bench/torch_sagan.py"), str(resolved), "--warmup", "2",
                              "--steps", str(args.steps), "--threads", str(args.threads)]))
    table, wall = {}, {}
    for name, cmd in impls:
        rows, cpu_ms, step_s = perf_samples(cmd, args.freq, tmp / f"{name}.data")
        wall[name] = step_s * 1e3
        per_group = {}
        for pct, dso, sym in rows:
            g = group_of(dso, sym)
            per_group[g] = per_group.get(g, 0.0) + pct
        # CPU time of all threads per step (the start-up spread over the steps, under "other").
        ms_per_pct = cpu_ms / 100 / (args.steps + 2)
        table[name] = {g: (p, p * ms_per_pct) for g, p in per_group.items()}
        print(f"{name}: {cpu_ms / 1e3:.1f} s of CPU time sampled", file=sys.stderr)
    groups = [g for g, _ in GROUPS] + ["other (dispatch, autograd, Python, start-up)"]
    names = [n for n, _ in impls]
    print(f"{args.config}, 1 process x {args.threads} threads: CPU ms per step (all threads), share of samples")
    print(f"{'':48}" + "".join(f"{n:>20}" for n in names))
    for g in groups:
        cells = "".join(f"{table[n].get(g, (0, 0))[1]:10.1f} ({table[n].get(g, (0, 0))[0]:4.1f}%)"
                        for n in names)
        print(f"{g:48}{cells}")
    totals = "".join(f"{sum(v[1] for v in table[n].values()):10.1f}{'':10}" for n in names)
    print(f"{'total CPU time':48}{totals}")
    print(f"{'median step, wall clock':48}" + "".join(f"{wall[n]:10.1f}{'':10}" for n in names))
    idle = "".join(f"{args.threads * wall[n] - sum(v[1] for v in table[n].values()):10.1f}{'':10}" for n in names)
    print(f"{'threads x wall - CPU (idle cores; CPU has start-up)':48}{idle}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
