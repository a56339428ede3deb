"""The sagan model and training step in plain PyTorch eager, for side-by-side timing (bench/side_by_side.py).

    python bench/torch_sagan.py CONFIG.toml [--steps N] [--warmup K] [--threads T] [--profile FILE] [--flops]
        [--device cuda] [--autocast bf16|fp16]
    mpirun -np 2 python bench/torch_sagan.py CONFIG.toml ...   (DDP over gloo, one rank per process)

CONFIG.toml is a *resolved* sagan config (`sagan show-config --config ... --set ...` prints one), so
both sides build the same model: same layers and widths (src/model/), spectral norm with persistent
u/v and one power iteration per step, W/sigma computed once per step and reused by every forward of
the step, attention ("official" or "paper"), class-conditional BN, projection head, hinge loss, TTUR
Adam (torch.optim.Adam, PyTorch's default implementation on CPU), EMA of G, and the same step
(src/train/trainer.rs): G and D power iterations; fake = G(z) without grad; D(real) and D(fake);
backward; Adam on D; D renormalised without a power iteration; G step through D with D's parameters
frozen (requires_grad off, as StudioGAN does); Adam on G; EMA (G_ema power iteration when averaging).
The noise is drawn per step for the whole global batch, each rank taking its rows, as sagan does.
The losses are read to the host every step (sagan does too, to log and to stop on divergence), so
on a GPU each step ends with the device idle and the wall time per step is the GPU's time.
--autocast runs the three forwards under torch.autocast (the losses and SN's power iteration stay
fp32), the mixed precision a PyTorch user would reach for first.

Data: real images are synthetic (uniform in [-1, 1], random labels) from a pool held in memory: the
data's content does not change the arithmetic's cost, and sagan's loader cuts its batches on other
threads ahead of the step. Prints one JSON line (rank 0): median seconds per step after the warm-up,
images/s, the peak RSS of each rank, and with --flops the FLOPs of one iteration as
torch.utils.flop_counter counts them (convolutions, linear layers, bmm; forward and backward).
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
try:
    import tomllib
except ImportError:  # Python < 3.11 (a GPU machine's own Python, say)
    import tomli as tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F


CHANNELS_LAST = False  # --channels-last: NHWC activations and weights (an experiment)


class SpectralNorm(nn.Module):
    """W (a parameter) with persistent u, v; `refresh` sets `w` = W / sigma for the step."""

    def __init__(self, shape, fan_in, fan_out, eps):
        super().__init__()
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        rows, cols = shape[0], self.weight[0].numel()
        self.eps = eps
        self.register_buffer("weight_u", self._normalise(torch.randn(rows)))
        self.register_buffer("weight_v", self._normalise(torch.randn(cols)))
        self.w = None

    def _normalise(self, x):
        return x / (x.norm() + self.eps)

    def _mat(self):
        return self.weight.reshape(self.weight.shape[0], -1)  # a view unless channels-last

    @torch.no_grad()
    def power_iteration(self):
        w = self._mat()
        v = self._normalise(w.t().mv(self.weight_u))
        u = self._normalise(w.mv(v))
        self.weight_v.copy_(v)
        self.weight_u.copy_(u)

    def refresh(self, mode):
        if mode == "power":
            self.power_iteration()
        with torch.set_grad_enabled(mode != "detached" and torch.is_grad_enabled()):
            sigma = torch.dot(self.weight_u, self._mat().mv(self.weight_v))
            self.w = self.weight / sigma


class SNConv(nn.Module):
    def __init__(self, c_in, c_out, k, bias, eps):
        super().__init__()
        self.sn = SpectralNorm((c_out, c_in, k, k), c_in * k * k, c_out * k * k, eps)
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.pad = k // 2

    def forward(self, x):
        return F.conv2d(x, self.sn.w, self.bias, padding=self.pad)


class SNLinear(nn.Module):
    def __init__(self, d_in, d_out, eps):
        super().__init__()
        self.sn = SpectralNorm((d_out, d_in), d_in, d_out, eps)
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x):
        return F.linear(x, self.sn.w, self.bias)


class Attention(nn.Module):
    def __init__(self, c, official, eps):
        super().__init__()
        value_ch = c // 2 if official else c
        self.official = official
        self.theta = SNConv(c, c // 8, 1, False, eps)
        self.phi = SNConv(c, c // 8, 1, False, eps)
        self.g = SNConv(c, value_ch, 1, False, eps)
        self.out = SNConv(value_ch, c, 1, False, eps) if official else None
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, _, h, w = x.shape
        pool = (lambda t: F.max_pool2d(t, 2, 2)) if self.official else (lambda t: t)
        theta = self.theta(x).reshape(b, -1, h * w)
        phi = pool(self.phi(x)).flatten(2)
        g = pool(self.g(x)).flatten(2)
        attn = torch.softmax(theta.transpose(1, 2).bmm(phi), dim=-1)
        o = g.bmm(attn.transpose(1, 2)).view(b, -1, h, w)
        if CHANNELS_LAST:
            o = o.contiguous(memory_format=torch.channels_last)
        if self.out is not None:
            o = self.out(o)
        return x + self.gamma * o


class CondBN(nn.Module):
    def __init__(self, c, classes, eps, momentum):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.gamma = nn.Parameter(torch.ones(classes, c))
        self.beta = nn.Parameter(torch.zeros(classes, c))
        self.eps, self.momentum = eps, momentum

    def forward(self, x, y):
        h = F.batch_norm(x, self.running_mean, self.running_var, None, None, True, self.momentum, self.eps)
        return h * self.gamma[y][:, :, None, None] + self.beta[y][:, :, None, None]


class AffineBN(nn.Module):
    def __init__(self, c, eps, momentum):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps, self.momentum = eps, momentum

    def forward(self, x):
        h = F.batch_norm(x, self.running_mean, self.running_var, None, None, True, self.momentum, self.eps)
        return h * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class UpBlock(nn.Module):
    def __init__(self, c_in, c_out, m):
        super().__init__()
        self.bn0 = CondBN(c_in, m["num_classes"], m["bn_eps"], m["bn_momentum"])
        self.conv1 = SNConv(c_in, c_out, 3, True, m["sn_eps"])
        self.bn1 = CondBN(c_out, m["num_classes"], m["bn_eps"], m["bn_momentum"])
        self.conv2 = SNConv(c_out, c_out, 3, True, m["sn_eps"])
        self.shortcut = SNConv(c_in, c_out, 1, True, m["sn_eps"])

    def forward(self, x, y):
        h = F.interpolate(F.relu(self.bn0(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn1(self.conv1(h), y)))
        return self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest")) + h


class DownBlock(nn.Module):
    def __init__(self, c_in, c_out, down, optimised, eps):
        super().__init__()
        self.conv1 = SNConv(c_in, c_out, 3, True, eps)
        self.conv2 = SNConv(c_out, c_out, 3, True, eps)
        needs = optimised or down or c_in != c_out
        self.shortcut = SNConv(c_in, c_out, 1, True, eps) if needs else None
        self.down, self.optimised = down, optimised

    def forward(self, x):
        pool = (lambda t: F.avg_pool2d(t, 2)) if self.down else (lambda t: t)
        h = x if self.optimised else F.relu(x)
        h = pool(self.conv2(F.relu(self.conv1(h))))
        if self.shortcut is None:
            s = x
        elif self.optimised:
            s = self.shortcut(pool(x))
        else:
            s = pool(self.shortcut(x))
        return s + h


# src/config/arch.rs: (G input multiple, G block multiples, D blocks (multiple, downsample)).
ARCH = {
    32: (1, [1, 1, 1], [(1, True), (1, True), (1, False), (1, False)]),
    64: (16, [8, 4, 2, 1], [(1, True), (2, True), (4, True), (8, True), (16, False)]),
    128: (16, [16, 8, 4, 2, 1], [(1, True), (2, True), (4, True), (8, True), (16, True), (16, False)]),
}


def sn_modules(net):
    return [m for m in net.modules() if isinstance(m, SpectralNorm)]


class Generator(nn.Module):
    def __init__(self, m):
        super().__init__()
        g_in, g_blocks, _ = ARCH[m["resolution"]]
        official = m.get("attention", "official") == "official"
        self.input_ch = g_in * m["g_ch"]
        self.input = SNLinear(m["z_dim"], 16 * self.input_ch, m["sn_eps"])
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleList()
        c = self.input_ch
        for i, mult in enumerate(g_blocks):
            c_out = mult * m["g_ch"]
            self.blocks.append(UpBlock(c, c_out, m))
            res = 4 << (i + 1)
            self.attention.append(Attention(c_out, official, m["sn_eps"]) if res in m["g_attn_res"] else nn.Identity())
            c = c_out
        self.bn = AffineBN(c, m["bn_eps"], m["bn_momentum"])
        self.out = SNConv(c, m["img_channels"], 3, True, m["sn_eps"])

    def forward(self, z, y):
        h = self.input(z).view(-1, self.input_ch, 4, 4)
        if CHANNELS_LAST:
            h = h.contiguous(memory_format=torch.channels_last)
        for block, attn in zip(self.blocks, self.attention):
            h = attn(block(h, y))
        h = F.relu(self.bn(h))
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    def __init__(self, m):
        super().__init__()
        _, _, d_blocks = ARCH[m["resolution"]]
        official = m.get("attention", "official") == "official"
        self.blocks = nn.ModuleList()
        self.attention = nn.ModuleList()
        c, res = m["img_channels"], m["resolution"]
        for i, (mult, down) in enumerate(d_blocks):
            c_out = mult * m["d_ch"]
            res = res // 2 if down else res
            self.blocks.append(DownBlock(c, c_out, down, i == 0, m["sn_eps"]))
            self.attention.append(Attention(c_out, official, m["sn_eps"]) if res in m["d_attn_res"] else nn.Identity())
            c = c_out
        self.linear = SNLinear(c, 1, m["sn_eps"])
        self.embed = SpectralNorm((m["num_classes"], c), m["num_classes"], c, m["sn_eps"])

    def forward(self, x, y):
        h = x
        for block, attn in zip(self.blocks, self.attention):
            h = attn(block(h))
        h = F.relu(h).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (F.embedding(y, self.embed.w) * h).sum(1)


def refresh(net, mode):
    for sn in sn_modules(net):
        sn.refresh(mode)


class Ema:
    """G_ema = lerp towards G from `start` on (BN statistics copied, own power iteration), a copy before."""

    def __init__(self, g, g_ema, decay, start):
        self.params = list(zip(g.parameters(), g_ema.parameters()))
        self.buffers = list(zip(g.named_buffers(), g_ema.buffers()))
        self.bn = [(b, e) for (n, b), e in self.buffers if n.endswith(("running_mean", "running_var"))]
        self.sn = sn_modules(g_ema)
        self.decay, self.start = decay, start

    @torch.no_grad()
    def update(self, step):
        if step >= self.start and self.decay > 0:
            for p, e in self.params:
                e.lerp_(p, 1.0 - self.decay)
            for b, e in self.bn:
                e.copy_(b)
            for sn in self.sn:
                sn.power_iteration()
        else:
            for p, e in self.params:
                e.copy_(p)
            for (_, b), e in self.buffers:
                e.copy_(b)


# Leaf ops that only allocate, alias or describe a tensor: no kernel on a GPU.
NO_KERNEL = {
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::view", "aten::as_strided",
    "aten::reshape", "aten::_reshape_alias", "aten::_unsafe_view", "aten::t", "aten::transpose",
    "aten::permute", "aten::expand", "aten::unsqueeze", "aten::squeeze", "aten::narrow",
    "aten::slice", "aten::select", "aten::detach", "aten::alias", "aten::lift_fresh",
    "aten::resize_", "aten::set_", "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense",
    "aten::result_type", "aten::split", "aten::chunk", "aten::flatten", "aten::unbind",
    "aten::view_as", "aten::expand_as", "aten::contiguous", "aten::to", "aten::_to_copy",
    "aten::requires_grad_", "aten::numpy_T",
}


def kernel_like_ops(events):
    """Profiled leaf aten ops that compute something (a GPU would launch a kernel for each)."""
    return sum(1 for e in events
               if e.name.startswith("aten::") and not e.cpu_children and e.name not in NO_KERNEL)


def step_seed(seed, step, phase):
    """src/train/trainer.rs step_seed (SplitMix64's finaliser)."""
    mask = (1 << 64) - 1
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + phase) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    x ^= x >> 31
    return x - (1 << 64) if x >= 1 << 63 else x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="a resolved sagan config (sagan show-config output)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: train.threads, else the CPUs)")
    ap.add_argument("--profile", help="write torch.profiler's op table of one step here")
    ap.add_argument("--flops", action="store_true", help="count one iteration's FLOPs")
    ap.add_argument("--pool", type=int, default=1024, help="synthetic real images held in memory")
    ap.add_argument("--phases", action="store_true", help="time each phase of the step (as sagan bench-train)")
    ap.add_argument("--channels-last", action="store_true", help="NHWC activations and weights")
    ap.add_argument("--fused-adam", action="store_true", help="torch.optim.Adam(fused=True)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--autocast", choices=["none", "bf16", "fp16"], default="none",
                    help="forwards under torch.autocast with this dtype")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.autocast)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    global CHANNELS_LAST
    CHANNELS_LAST = args.channels_last

    cfg = tomllib.load(open(args.config, "rb"))
    m, t = cfg["model"], cfg["train"]
    world = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    threads = args.threads or t.get("threads", 0) or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    if world > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29517")
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)

    torch.manual_seed(t.get("seed", 0))
    g, d, g_ema = Generator(m), Discriminator(m), Generator(m)
    for net in (g, d, g_ema):
        for sn in sn_modules(net):  # sagan converges u, v at construction
            for _ in range(50):
                sn.power_iteration()
    g_ema.load_state_dict(g.state_dict())
    for net in (g, d, g_ema):
        net.to(device)
    ema = Ema(g, g_ema, t["ema_decay"], t["ema_start"])
    betas = (t["beta1"], t["beta2"])
    if CHANNELS_LAST:
        for net in (g, d, g_ema):
            net.to(memory_format=torch.channels_last)
    fused = {"fused": True} if args.fused_adam else {}
    opt_g = torch.optim.Adam(g.parameters(), lr=t["lr_g"], betas=betas, eps=t["adam_eps"], **fused)
    opt_d = torch.optim.Adam(d.parameters(), lr=t["lr_d"], betas=betas, eps=t["adam_eps"], **fused)
    g_train, d_train = g, d
    if world > 1:
        # broadcast_buffers=False: re-broadcasting BN statistics and u, v before every forward is
        # both wrong for a GAN and slower. The frozen net of each phase is called without DDP.
        from torch.nn.parallel import DistributedDataParallel as DDP
        g_train = DDP(g, broadcast_buffers=False)
        d_train = DDP(d, broadcast_buffers=False)

    global_batch, z_dim, classes = t["batch_size"], m["z_dim"], m["num_classes"]
    batch = global_batch // world
    res, ch = m["resolution"], m["img_channels"]
    pool_x = (torch.rand(args.pool, ch, res, res) * 2 - 1).to(device)
    if CHANNELS_LAST:
        pool_x = pool_x.contiguous(memory_format=torch.channels_last)
    pool_y = torch.randint(classes, (args.pool,)).to(device)
    perm = torch.randperm(args.pool).to(device)
    seed = t.get("seed", 0)

    def noise(step, phase):
        torch.manual_seed(step_seed(seed, step, phase))
        z = torch.randn(global_batch, z_dim)
        y = torch.randint(classes, (global_batch,))
        rows = slice(rank * batch, (rank + 1) * batch)
        return z[rows].to(device, non_blocking=True), y[rows].to(device, non_blocking=True)

    phases = {}
    clock = [time.perf_counter()]

    def mark(name):
        if args.phases:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            phases[name] = phases.get(name, 0.0) + now - clock[0]
            clock[0] = now

    def train_step(step):
        mark("between steps")
        refresh(g, "power")
        mark("SN refresh")
        refresh(d, "power")
        mark("SN refresh")
        idx = perm[(step * global_batch + rank * batch) % args.pool:][:batch]
        if len(idx) < batch:
            idx = perm[:batch]
        x, y = pool_x[idx], pool_y[idx]
        z, y_fake = noise(step, 0)
        mark("data and noise")
        with torch.no_grad(), autocast():
            fake = g(z, y_fake)
        mark("D step: G forward (no grad)")
        with autocast():
            d_real = d_train(x, y).float()
            d_fake = d_train(fake, y_fake).float()
        l_real = F.relu(1.0 - d_real).mean()
        l_fake = F.relu(1.0 + d_fake).mean()
        mark("D step: D forward")
        opt_d.zero_grad()
        (l_real + l_fake).backward()
        mark("D step: backward")
        opt_d.step()
        mark("Adam")
        refresh(d, "detached")
        mark("SN refresh")
        d.requires_grad_(False)
        z, y = noise(step, 1)
        mark("data and noise")
        with autocast():
            g_out = d(g_train(z, y), y).float()
        g_loss = -g_out.mean()
        mark("G step: G and D forward")
        opt_g.zero_grad()
        g_loss.backward()
        mark("G step: backward")
        opt_g.step()
        mark("Adam")
        d.requires_grad_(True)
        ema.update(step + 1)
        mark("EMA")
        stats = l_real.item(), l_fake.item(), g_loss.item()
        mark("statistics to host")
        return stats

    if args.flops:
        from torch.utils.flop_counter import FlopCounterMode

        train_step(0)
        with FlopCounterMode(display=False) as fc:
            train_step(1)
        flops = fc.get_total_flops()
    times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            phases.clear()
            clock[0] = time.perf_counter()
        t0 = time.perf_counter()
        train_step(step)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    if args.profile and rank == 0:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_step(args.warmup + args.steps)
        with open(args.profile, "w") as f:
            f.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=60))
            f.write(f"\n{kernel_like_ops(prof.events())} ops per iteration that compute (leaf ops "
                    "that are not views, allocations or metadata: about one kernel launch each on a GPU)\n")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if world > 1:
        all_rss = [None] * world
        torch.distributed.all_gather_object(all_rss, rss)
        torch.distributed.destroy_process_group()
    else:
        all_rss = [rss]
    if rank == 0:
        med = statistics.median(times)
        out = {
            "impl": "pytorch",
            "world": world,
            "threads": threads,
            "global_batch": global_batch,
            "median_step_s": med,
            "images_per_s": global_batch / med,
            "peak_rss_mib": [r / 1024 for r in all_rss],
            "g_params": sum(p.numel() for p in g.parameters()),
            "d_params": sum(p.numel() for p in d.parameters()),
            "device": str(device),
            "autocast": args.autocast,
        }
        if device.type == "cuda":
            out["peak_device_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        if args.flops:
            out["flops_per_iter"] = flops
        if args.phases:
            out["phases_ms"] = [(p, v * 1e3 / args.steps) for p, v in phases.items()]
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
