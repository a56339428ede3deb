"""Independent PyTorch reference for the SAGAN attention block and the spectrally normalised layers.

Usage: check_attention.py FILE.safetensors   (written by tests/python_crosscheck.rs)

The file holds the Rust VarStore's variables (SN u/v as they were *before* the Rust refresh), the
u/v after it under "updated.<name>", the inputs under "input.*" and the Rust results under
"output.*" and "map.*". This script redoes the power iteration and the forwards from the formulas of
the official code (see /work/shared/REFERENCE.md), compares, and exits 1 if any max abs diff > TOL.

The reference runs in float64 so the measured differences are the Rust float32 error alone, not the
sum of two float32 errors.
"""

import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

SN_EPS = 1e-12  # official code's l2-normalisation epsilon
TOL = 1e-5
C = 32  # attention width the Rust test builds

failures = []


def report(label, ours, ref):
    if tuple(ours.shape) != tuple(ref.shape):
        failures.append(label)
        print(f"FAIL {label}: shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}")
        return
    diff = (ours.double() - ref).abs().max().item()
    bad = not diff <= TOL  # NaN counts as a failure
    if bad:
        failures.append(label)
    print(f"{'FAIL' if bad else 'ok  '} {label:34s} max abs diff {diff:.3e}")


def expect_shape(label, t, shape):
    if tuple(t.shape) != tuple(shape):
        failures.append(label)
        print(f"FAIL {label}: shape {tuple(t.shape)}, formulas say {tuple(shape)}")


def l2_normalise(x):
    return x / (x.norm() + SN_EPS)


def spectral_norm(t, name):
    """One power iteration from the stored u, then W / sigma; also compares the new u and v."""
    w = t[f"{name}.weight"]
    mat = w.reshape(w.shape[0], -1)
    v = l2_normalise(mat.t() @ t[f"{name}.weight_u"])
    u = l2_normalise(mat @ v)
    sigma = torch.dot(u, mat @ v)
    report(f"{name}.weight_u (updated)", t[f"updated.{name}.weight_u"], u)
    report(f"{name}.weight_v (updated)", t[f"updated.{name}.weight_v"], v)
    return w / sigma


def attention(t, prefix, x, official):
    b, c, h, w = x.shape
    value_ch = c // 2 if official else c
    expected = {
        f"{prefix}.gamma": (1,),
        f"{prefix}.theta.weight": (c // 8, c, 1, 1),
        f"{prefix}.phi.weight": (c // 8, c, 1, 1),
        f"{prefix}.g.weight": (value_ch, c, 1, 1),
    }
    if official:
        expected[f"{prefix}.out.weight"] = (c, value_ch, 1, 1)
    # The official block has no biases and only these parameters; anything else is a deviation.
    present = {
        k for k in t
        if k.startswith(prefix + ".") and not k.endswith((".weight_u", ".weight_v"))
    }
    if present != set(expected):
        failures.append(f"{prefix} variables")
        print(f"FAIL {prefix} variables: {sorted(present)}, formulas say {sorted(expected)}")
        return None, None
    for k, shape in expected.items():
        expect_shape(k, t[k], shape)

    w_theta = spectral_norm(t, f"{prefix}.theta")
    w_phi = spectral_norm(t, f"{prefix}.phi")
    w_g = spectral_norm(t, f"{prefix}.g")
    theta = F.conv2d(x, w_theta).reshape(b, c // 8, h * w)
    phi = F.conv2d(x, w_phi)
    g = F.conv2d(x, w_g)
    if official:
        phi = F.max_pool2d(phi, kernel_size=2, stride=2)
        g = F.max_pool2d(g, kernel_size=2, stride=2)
    phi = phi.reshape(b, c // 8, -1)
    g = g.reshape(b, value_ch, -1)
    # beta[b, q, k] = softmax over keys k of theta_q . phi_k
    beta = F.softmax(torch.einsum("bcq,bck->bqk", theta, phi), dim=-1)
    # o[b, :, q] = sum_k g[b, :, k] beta[b, q, k], i.e. o = g beta^T
    o = torch.einsum("bck,bqk->bcq", g, beta).reshape(b, value_ch, h, w)
    if official:
        o = F.conv2d(o, spectral_norm(t, f"{prefix}.out"))
    return x + t[f"{prefix}.gamma"] * o, beta


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    t = {k: v.double() for k, v in load_file(sys.argv[1]).items()}
    x = t["input.attn"]
    expect_shape("input.attn", x, (2, C, 16, 16))

    for prefix, official in (("official", True), ("paper", False)):
        y, beta = attention(t, prefix, x, official)
        if y is None:
            continue
        report(f"{prefix} attention map", t[f"map.{prefix}"], beta)
        report(f"{prefix} attention output", t[f"output.{prefix}"], y)
        # With a small gamma or a vanishing o the output check would only test y = x.
        print(f"     {prefix}: gamma {t[prefix + '.gamma'].item():+.3f}, "
              f"max |y - x| {(y - x).abs().max().item():.3e}")

    w = spectral_norm(t, "conv")
    report("conv 3x3 output", t["output.conv"],
           F.conv2d(t["input.conv"], w, t["conv.bias"], padding=w.shape[-1] // 2))
    report("linear output", t["output.lin"],
           F.linear(t["input.lin"], spectral_norm(t, "lin"), t["lin.bias"]))

    if failures:
        print(f"{len(failures)} check(s) over {TOL:g} or malformed: {', '.join(failures)}")
        return 1
    print(f"all checks within {TOL:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
