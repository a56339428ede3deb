"""sagan against a PyTorch eager implementation of the same model (bench/torch_sagan.py), side by side.

    .venv/bin/python bench/side_by_side.py [--configs fmnist32,cifar10_32] [--modes 1x1,1x2,2x1]
        [--rounds 2] [--sagan target/release/sagan] [--bin NAME=OTHER_BINARY ...] [--flops] [--phases]

For each config, every mode (processes x intra-op threads; 2x1 is sagan under mpirun against DDP
over gloo under the same mpirun) and implementation runs once per round, in alternating order,
`--rounds` times (this machine's speed drifts by 20 % from minute to minute: only interleaved runs
compare).
Each run times steps after a warm-up and reports its median step; the table gives images/s per
round, the median over rounds, the ratio sagan / PyTorch (median of the per-round ratios), the
peak RSS per rank and, with --flops, achieved GFLOP/s and the fraction of the CPU's SGEMM rate.
--bin NAME=PATH adds more sagan binaries to the rotation (A/B of changes).

Both sides train the same resolved config (`sagan show-config`). CIFAR-10 is not on this machine:
the cifar10_32 config trains on synthetic CIFAR-10 binaries (random pixels and labels, 1280
images, written to a temporary folder); the PyTorch side uses synthetic images of the same shape.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("SAGAN_PYTHON", str(ROOT / ".venv/bin/python"))
# (warm-up steps, timed steps) per config: a CIFAR-10 step takes seconds on 2 cores; a
# Fashion-MNIST run of 40 steps (12 s) gives a steadier median than 20 did.
STEPS = {"fmnist32": (3, 40), "cifar10_32": (1, 3)}
MPIRUN = ["mpirun", "--allow-run-as-root", "--bind-to", "core", "-np"]


def synthetic_cifar(folder):
    rnd = random.Random(0)
    for i in range(1, 6):
        rec = bytearray()
        for _ in range(256):
            rec.append(rnd.randrange(10))
            rec += rnd.randbytes(3072)
        (folder / f"data_batch_{i}.bin").write_bytes(bytes(rec))


def last_json(stdout):
    """The last JSON line a benchmark printed (its result)."""
    return json.loads([l for l in stdout.splitlines() if l.startswith("{")][-1])


def resolve_config(sagan, config, setargs, path):
    """Writes the config as sagan resolves it (defaults, overrides) to `path`, for the PyTorch side."""
    path.write_text(subprocess.run([sagan, "show-config", "--config", str(config), *setargs],
                                   capture_output=True, text=True, check=True).stdout)
    return path


def cpu_jiffies():
    """(steal, total) jiffies of all CPUs from /proc/stat; (0, 0) where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0, 0
    # user nice system idle iowait irq softirq steal guest guest_nice; guests are inside user.
    return fields[7], sum(fields[:8])


def run_json(cmd, env=None):
    """Runs `cmd`, returns its last JSON line plus `steal_share`: the part of this VM's CPU time
    that its hypervisor gave to others during the run. Lockstep ranks wait for whichever core
    lost more, so it shows up as all-reduce waiting."""
    steal0, total0 = cpu_jiffies()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    printed = any(l.startswith("{") for l in out.stdout.splitlines())
    # torch's gloo teardown under mpirun now and then aborts ("terminate called without an
    # active exception") after the result is printed: keep the result, say so.
    if out.returncode != 0 and printed and env is not None:
        print(f"  note: exit code {out.returncode} after the result was printed: {' '.join(cmd[-8:])}",
              flush=True)
    elif out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    res = last_json(out.stdout)
    steal1, total1 = cpu_jiffies()
    if total1 > total0:
        res["steal_share"] = (steal1 - steal0) / (total1 - total0)
    return res


def run_pair(cmd):
    """Two copies of `cmd` at the same time, each on its own core: their JSON lines, and the VM's
    steal share during the pair."""
    steal0, total0 = cpu_jiffies()
    procs = [subprocess.Popen(["taskset", "-c", str(i), *cmd], stdout=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"failed: {' '.join(cmd)}")
    steal1, total1 = cpu_jiffies()
    return [last_json(o) for o in outs], (steal1 - steal0) / max(total1 - total0, 1)


def sgemm_gflops(threads):
    code = (
        "import torch, time; torch.set_num_threads(%d); n = 2048; a = torch.randn(n, n); b = torch.randn(n, n)\n"
        "for _ in range(3): a @ b\n"
        "ts = []\n"
        "for _ in range(10):\n"
        "    t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)\n"
        "ts.sort(); print(2 * n**3 / ts[len(ts) // 2] / 1e9)" % threads
    )
    return float(subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="fmnist32,cifar10_32")
    ap.add_argument("--modes", default="1x1,1x2,2x1",
                    help="processes x threads, optionally bN for train.batch_size = N (1x1b32)")
    ap.add_argument("--rounds", type=int, default=2)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap.add_argument("--sagan", default=str(target / "release/sagan"))
    ap.add_argument("--bin", action="append", default=[], metavar="NAME=PATH",
                    help="more sagan binaries in the same rotation (A/B of changes), repeatable")
    ap.add_argument("--no-torch", action="store_true", help="only the sagan binaries")
    ap.add_argument("--steps", type=int, help="timed steps (default per config)")
    ap.add_argument("--warmup", type=int, help="untimed steps (default per config)")
    ap.add_argument("--flops", action="store_true", help="count FLOPs and measure SGEMM GFLOP/s")
    ap.add_argument("--phases", action="store_true", help="print sagan's time per phase of the step")
    ap.add_argument("--set", action="append", default=[], help="extra sagan config override")
    ap.add_argument("--ceiling", action="store_true",
                    help="with 1x1bN modes: also run two independent 1x1bN sagan processes at once, the "
                         "machine's own limit for 2 ranks (shared caches, memory bandwidth, clocks)")
    ap.add_argument("--device", default="cpu",
                    help="the PyTorch side's device (cuda on a GPU machine); a single sagan rank takes the "
                         "GPU by itself when one is there, and each run prints where it trained")
    ap.add_argument("--torch-args", default="", help="extra bench/torch_sagan.py options, e.g. --channels-last")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sagan-bench-"))
    cifar = tmp / "cifar"
    cifar.mkdir()
    synthetic_cifar(cifar)
    impls = [("sagan", args.sagan)] + [tuple(b.split("=", 1)) for b in args.bin]
    if not args.no_torch:
        impls.append(("pytorch", None))
    sgemm = {}
    rows = []
    for cname in args.configs.split(","):
        warmup, steps = STEPS.get(cname, (2, 10))
        warmup = args.warmup if args.warmup is not None else warmup
        steps = args.steps or steps
        sets = ["eval.enabled=false", f"output.dir={tmp}/out"] + args.set
        if cname.startswith("cifar"):
            sets.append(f"data.path={cifar}")
        config = ROOT / "configs" / f"{cname}.toml"
        flops = {}  # per batch-size override
        setups = []
        for mode in args.modes.split(","):
            # "2x1": 2 processes x 1 thread; "1x1b32": with train.batch_size = 32 (scaling checks).
            shape, _, mbatch = mode.partition("b")
            procs, threads = (int(v) for v in shape.split("x"))
            msets = sets + [f"train.threads={threads}"] + ([f"train.batch_size={mbatch}"] if mbatch else [])
            setargs = [a for s in msets for a in ("--set", s)]
            resolved = resolve_config(args.sagan, config, setargs, tmp / f"{cname}-{mode}.toml")
            if args.flops and mbatch not in flops:
                flops[mbatch] = run_json([PYTHON, str(ROOT / "bench/torch_sagan.py"), str(resolved), "--flops",
                                          "--steps", "1", "--warmup", "0"])["flops_per_iter"]
            if args.flops and procs * threads not in sgemm:
                sgemm[procs * threads] = sgemm_gflops(procs * threads)
            prefix = MPIRUN + [str(procs)] if procs > 1 else []
            cmds = {}
            for name, binary in impls:
                if binary:
                    cmds[name] = (prefix + [binary, "bench-train", "--config", str(config), *setargs,
                                            "--warmup", str(warmup), "--steps", str(steps),
                                            *(["--phases"] if args.phases else [])], None)
                else:
                    cmds[name] = (prefix + [PYTHON, str(ROOT / "bench/torch_sagan.py"), str(resolved),
                                            "--warmup", str(warmup), "--steps", str(steps), "--threads",
                                            str(threads), "--device", args.device, *args.torch_args.split(),
                                            *(["--phases"] if args.phases else [])], "torch")
            pair = args.ceiling and bool(mbatch) and procs == 1
            setups.append((mode, cmds, pair, {name: [] for name, _ in impls}, flops.get(mbatch)))
        # Every round runs every mode and implementation, alternating their order, so that a ratio
        # between modes (the scaling efficiency) also compares neighbours in time.
        for r in range(args.rounds):
            for mode, cmds, pair, results, _ in setups if r % 2 == 0 else setups[::-1]:
                for name, _ in impls if r % 2 == 0 else impls[::-1]:
                    cmd, kind = cmds[name]
                    env = dict(os.environ, MASTER_PORT=str(random.randrange(20000, 60000))) if kind else None
                    res = run_json(cmd, env)
                    if pair and not kind:
                        both, steal = run_pair(cmd)
                        res["pair_images_per_s"] = sum(p["images_per_s"] for p in both)
                        print(f"  {cname} {mode} round {r + 1} {name}: two at once, "
                              f"{res['pair_images_per_s']:.2f} images/s together "
                              f"(VM steal {steal * 100:.1f}% of CPU time)", flush=True)
                    results[name].append(res)
                    print(f"  {cname} {mode} round {r + 1} {name} on {res.get('device', 'cpu')}: "
                          f"{res['images_per_s']:.2f} images/s "
                          f"(median step {res['median_step_s'] * 1e3:.0f} ms, "
                          f"VM steal {res.get('steal_share', 0) * 100:.1f}% of CPU time)", flush=True)
                    if res.get("work_ms_sd_per_rank"):
                        # Step-to-step jitter of each rank's own work: with lockstep ranks the
                        # faster one waits for it at every all-reduce.
                        print("    own work per step, by rank: " + ", ".join(
                            f"{m:.1f} ms (sd {sd:.1f})"
                            for m, sd in zip(res["work_ms_per_rank"], res["work_ms_sd_per_rank"])))
                    if args.phases and res.get("phases_ms"):
                        print("    " + ", ".join(f"{p} {ms:.1f}" for p, ms in res["phases_ms"]))
        rows += [(cname, mode, results, fl) for mode, _, _, results, fl in setups]
    print()
    names = [n for n, _ in impls]
    for cname, mode, results, flops in rows:
        print(f"{cname} {mode}: images/s, median over rounds (each round)")
        base = results[names[0]]
        for n in names:
            v = [x["images_per_s"] for x in results[n]]
            line = f"  {n:>12}: {statistics.median(v):8.2f} ({', '.join(f'{x:.2f}' for x in v)})"
            if "pytorch" in results and n != "pytorch":
                rs = [a["images_per_s"] / b["images_per_s"] for a, b in zip(results[n], results["pytorch"])]
                line += f"  vs pytorch {statistics.median(rs):.2f}x ({', '.join(f'{x:.2f}' for x in rs)})"
            if n != names[0] and n != "pytorch":
                rs = [a["images_per_s"] / b["images_per_s"] for a, b in zip(results[n], base)]
                line += f"  vs {names[0]} {statistics.median(rs):.2f}x"
            rss = max(max(x["peak_rss_mib"]) for x in results[n])
            line += f"  peak RSS {rss:.0f} MiB/rank"
            steal = [x["steal_share"] for x in results[n] if "steal_share" in x]
            if steal:
                line += f", VM steal {statistics.median(steal) * 100:.1f}%"
            share = [x.get("allreduce_share") for x in results[n] if x.get("allreduce_share") is not None]
            if share and mode.startswith("2"):
                line += f", all-reduce {statistics.median(share) * 100:.1f}% of step"
                pure = [x["allreduce_transfer_share"] for x in results[n] if "allreduce_transfer_share" in x]
                if pure:
                    line += f" ({statistics.median(pure) * 100:.1f}% without waiting for the other rank)"
                per_rank = [x["allreduce_share_per_rank"] for x in results[n] if "allreduce_share_per_rank" in x]
                if per_rank:
                    # A rank that waits least in every round is the one the others wait for.
                    line += "; by rank, rounds: " + " | ".join(
                        "/".join(f"{v * 100:.1f}" for v in r) for r in per_rank) + " %"
            print(line)
        if flops:
            procs, threads = (int(v) for v in mode.partition("b")[0].split("x"))
            peak = sgemm[procs * threads]
            for n in names:
                gf = flops / statistics.median([x["median_step_s"] for x in results[n]]) / 1e9
                print(f"{'':17}{n}: {flops / 1e9:.1f} GFLOP/iteration, {gf:.1f} GFLOP/s achieved, "
                      f"{gf / peak * 100:.0f}% of SGEMM ({peak:.1f} GFLOP/s on {procs * threads} threads)")
    scaling(rows, names)
    return 0


def scaling(rows, names):
    """Scaling efficiency: 2 ranks x 1 thread against 1 x 1 at the same per-rank batch (1x1bN, N = half
    the global batch), images/s of the two ranks over twice the single rank's, per round."""
    by = {(c, m): r for c, m, r, _ in rows}
    for cname, mode, results, _ in rows:
        if mode != "2x1":
            continue
        for n in names:
            gb = results[n][0].get("global_batch")
            single = by.get((cname, f"1x1b{gb // 2}")) if gb else None
            if not single:
                continue
            effs = [a["images_per_s"] / (2 * b["images_per_s"]) for a, b in zip(results[n], single[n])]
            print(f"{cname} scaling efficiency, 2 ranks x 1 thread against 1 x 1 at batch {gb // 2} per rank: "
                  f"{n} {statistics.median(effs):.2f} ({', '.join(f'{e:.2f}' for e in effs)})")
            pairs = [b["pair_images_per_s"] for b in single[n] if "pair_images_per_s" in b]
            if pairs:
                ceil = [b["pair_images_per_s"] / (2 * b["images_per_s"]) for b in single[n]]
                rel = [a["images_per_s"] / b["pair_images_per_s"] for a, b in zip(results[n], single[n])]
                print(f"{'':12}two independent 1 x 1 processes at once reach {statistics.median(ceil):.2f} of twice "
                      f"one alone (the machine's ceiling); the 2 ranks reach {statistics.median(rel):.2f} of the pair")


if __name__ == "__main__":
    sys.exit(main())
