"""Load a sagan generator (G_ema.safetensors or G.safetensors) into plain PyTorch and sample from it.

    python examples/load_g_ema.py runs/fmnist32/G_ema.safetensors --out grid.png [--per-class 8] [--seed 0]
    python examples/load_g_ema.py runs/fmnist32/G_ema.safetensors --check drawn.safetensors

The first draws a grid (one row per class) with PyTorch's own noise. The second takes z and y from
`sagan sample --weights G_ema.safetensors --tensors drawn.safetensors` and checks that this
re-implementation reproduces sagan's images (max abs difference <= 1e-5; exit status 1 if not).

Needs torch and safetensors (and Pillow for --out). Everything the model needs is in the file: the
tensors, and in the safetensors metadata the config the run was trained with (TOML), its step and
what the tensor names mean:

- `<layer>.weight` of a spectrally normalised layer is the raw weight W (PyTorch's `weight_orig`);
  the layer uses W / sigma with sigma = u . (W_mat v), W_mat = W reshaped to (out, -1), from the
  stored `<layer>.weight_u` and `<layer>.weight_v` (no power iteration when sampling). The
  metadata key `spectral_norm_vectors` lists them.
- Batch norms normalise with the statistics of the batch being generated, as sagan samples (its
  running statistics come from G, not from G_ema's averaged weights). So an image depends on the
  batch it is generated with: generate all of them in one forward pass to compare with sagan.
- `attention.<i>` is the self-attention block after block i (TensorBoard: `G.attention.<i>`).
"""

import argparse
import sys
import tomllib

import torch
import torch.nn.functional as F
from safetensors import safe_open

TOLERANCE = 1e-5


def load(path):
    """The tensors and the metadata (with the config parsed) of a sagan weights file."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != "sagan-weights" or meta.get("network") not in ("G", "G_ema"):
        sys.exit(f"{path}: not a sagan generator (metadata: {sorted(meta)})")
    meta["config"] = tomllib.loads(meta["config"])
    return tensors, meta


class Generator:
    """SAGAN's generator as sagan builds it (src/model/generator.rs), the layout read off the
    tensors: the input layer's width, the blocks present, where attention sits and which variant."""

    def __init__(self, tensors, config):
        self.t = tensors
        self.bn_eps = config["model"]["bn_eps"]
        self.blocks = sorted({int(k.split(".")[1]) for k in tensors if k.startswith("blocks.")})
        self.input_ch = tensors["input.weight"].shape[0] // 16

    def sn_weight(self, name):
        """W / sigma, sigma from the stored power-iteration vectors."""
        w = self.t[f"{name}.weight"]
        u, v = self.t[f"{name}.weight_u"], self.t[f"{name}.weight_v"]
        sigma = torch.dot(u, w.reshape(w.shape[0], -1).mv(v))
        return w / sigma

    def conv(self, name, x):
        w = self.sn_weight(name)
        return F.conv2d(x, w, self.t.get(f"{name}.bias"), padding=w.shape[-1] // 2)

    def cond_bn(self, name, x, y):
        h = F.batch_norm(x, None, None, training=True, eps=self.bn_eps)
        gamma = self.t[f"{name}.gamma"][y][:, :, None, None]
        beta = self.t[f"{name}.beta"][y][:, :, None, None]
        return h * gamma + beta

    def up_block(self, i, x, y):
        p = f"blocks.{i}"
        h = F.interpolate(F.relu(self.cond_bn(f"{p}.bn0", x, y)), scale_factor=2, mode="nearest")
        h = self.conv(f"{p}.conv1", h)
        h = self.conv(f"{p}.conv2", F.relu(self.cond_bn(f"{p}.bn1", h, y)))
        return self.conv(f"{p}.shortcut", F.interpolate(x, scale_factor=2, mode="nearest")) + h

    def attention(self, p, x):
        b, c, h, w = x.shape
        official = f"{p}.out.weight" in self.t  # "official": pooled keys/values and an output conv
        pool = (lambda t: F.max_pool2d(t, 2, 2)) if official else (lambda t: t)
        theta = self.conv(f"{p}.theta", x).reshape(b, -1, h * w)
        phi = pool(self.conv(f"{p}.phi", x)).flatten(2)
        g = pool(self.conv(f"{p}.g", x)).flatten(2)
        beta = torch.softmax(theta.transpose(1, 2).bmm(phi), dim=-1)  # (b, queries, keys)
        o = g.bmm(beta.transpose(1, 2)).reshape(b, -1, h, w)
        if official:
            o = self.conv(f"{p}.out", o)
        return x + self.t[f"{p}.gamma"] * o

    @torch.no_grad()
    def __call__(self, z, y):
        w = self.sn_weight("input")
        h = F.linear(z, w, self.t["input.bias"]).reshape(-1, self.input_ch, 4, 4)
        for i in self.blocks:
            h = self.up_block(i, h, y)
            if f"attention.{i}.gamma" in self.t:
                h = self.attention(f"attention.{i}", h)
        h = F.batch_norm(h, None, None, training=True, eps=self.bn_eps)
        h = F.relu(h * self.t["bn.weight"][None, :, None, None] + self.t["bn.bias"][None, :, None, None])
        return torch.tanh(self.conv("out", h))


def save_grid(images, rows, path):
    from PIL import Image

    n, c, h, w = images.shape
    cols = n // rows
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = F.pad(x, (1, 1, 1, 1))
    x = x.reshape(rows, cols, c, h + 2, w + 2).permute(0, 3, 1, 4, 2).reshape(rows * (h + 2), cols * (w + 2), c)
    Image.fromarray(x.squeeze(-1).numpy() if c == 1 else x.numpy()).save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", help="G_ema.safetensors (or G.safetensors) written by sagan")
    ap.add_argument("--out", help="write a grid of samples here (PNG), one row per class")
    ap.add_argument("--per-class", type=int, default=8, help="samples per class (grid columns)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed of the noise")
    ap.add_argument("--check", help="z, y and images from `sagan sample --tensors`: reproduce them")
    args = ap.parse_args()

    tensors, meta = load(args.weights)
    model = meta["config"]["model"]
    g = Generator(tensors, meta["config"])
    print(f"{args.weights}: {meta['network']} at step {meta['step']}, sagan {meta['sagan_version']}, "
          f"{model['resolution']}x{model['resolution']}x{model['img_channels']}, "
          f"{model['num_classes']} classes, z_dim {model['z_dim']}")

    if args.check:
        with safe_open(args.check, framework="pt") as f:
            z, y, theirs = f.get_tensor("z"), f.get_tensor("y"), f.get_tensor("images")
        ours = g(z, y)
        diff = (ours - theirs).abs().max().item()
        ok = diff <= TOLERANCE  # NaN fails
        print(f"{'ok' if ok else 'FAIL'}: {tuple(ours.shape)} images, max abs difference from sagan's {diff:.3e} "
              f"(tolerance {TOLERANCE:g})")
        return 0 if ok else 1

    torch.manual_seed(args.seed)
    classes = model["num_classes"]
    rows = min(classes, 10)
    y = torch.arange(rows).repeat_interleave(args.per_class) * classes // rows
    z = torch.randn(len(y), model["z_dim"])
    images = g(z, y)
    if args.out:
        save_grid(images, rows, args.out)
        print(f"{len(y)} samples -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
