"""Reference outputs for tests/inception_reference.rs from pytorch-fid's own InceptionV3, with random
weights (the real ones cannot be downloaded here).

Usage: inception_reference.py DIR. Writes DIR/weights.safetensors (the network's state_dict, named as
pytorch-fid's) and DIR/reference.safetensors (images, pool3, logits, logits_with_bias), and prints one
JSON line describing the activations so a degenerate draw (all-zero or huge features) is visible.
"""
import json
import os
import sys

import torch
import torchvision
from safetensors.torch import save_file

import pytorch_fid.inception as pfi

out_dir = sys.argv[1]
torch.manual_seed(20180521)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# The same module tree fid_inception_v3() builds, minus the download.
net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, init_weights=False, weights=None)
net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
net.Mixed_7b = pfi.FIDInceptionE_1(1280)
net.Mixed_7c = pfi.FIDInceptionE_2(2048)

with torch.no_grad():
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
            # One train-mode pass below replaces the running stats with that batch's statistics.
            m.momentum = 1.0
    net.fc.weight.normal_(0.0, 2048 ** -0.5)
    net.fc.bias.normal_(0.0, 1.0)

    # Running stats taken from real activations keep every layer's output O(1); drawing them blindly
    # lets the scale drift by orders of magnitude over 90 layers, or silences whole layers.
    # The calibration images are drawn like the test images below (low-resolution noise upsampled),
    # since white noise at 299x299 has very different statistics after the first convolutions.
    net.train()
    calib = torch.nn.functional.interpolate(torch.rand(4, 3, 64, 80), size=(299, 299), mode="bilinear")
    net(calib * 2 - 1)
    net.eval()
    # Then nudged off those exact statistics (in log scale for the variance, so the expected gain
    # stays 1 and the scale does not compound over the depth) so no two channels share a pattern a
    # loader could get right by accident.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.add_(torch.randn_like(m.running_mean) * 0.05 * m.running_var.sqrt())
            m.running_var.mul_(torch.empty_like(m.running_var).uniform_(-0.2, 0.2).exp())

state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
save_file(state, os.path.join(out_dir, "weights.safetensors"))

# pytorch-fid's own wrapper and fid_inception_v3(), fed these weights instead of the download; its
# load_state_dict is strict, so it also checks that the names above are exactly pytorch-fid's.
pfi.load_state_dict_from_url = lambda *args, **kwargs: state
model = pfi.InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True).eval()

# Non-square and not 299, so the resize is exercised in both directions' interpolation.
images = torch.rand(3, 3, 64, 80)
with torch.no_grad():
    pool3 = model(images)[0].squeeze(-1).squeeze(-1)
    # torch-fidelity's 'logits_unbiased' (what its IS uses) and 'logits'.
    logits = pool3.mm(state["fc.weight"].T)
    logits_with_bias = logits + state["fc.bias"].unsqueeze(0)

save_file(
    {
        "images": images.contiguous(),
        "pool3": pool3.contiguous(),
        "logits": logits.contiguous(),
        "logits_with_bias": logits_with_bias.contiguous(),
    },
    os.path.join(out_dir, "reference.safetensors"),
)
print(
    json.dumps(
        {
            "pool3_mean": pool3.mean().item(),
            "pool3_max": pool3.max().item(),
            "pool3_zero_fraction": (pool3 == 0).float().mean().item(),
            "logits_abs_max": logits.abs().max().item(),
            "logits_std": logits.std().item(),
        }
    )
)
