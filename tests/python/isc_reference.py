"""Reference Inception-Score logits for tests/is_torch_fidelity.rs from torch-fidelity 0.4.0 itself.

Usage: isc_reference.py DIR. DIR/weights.safetensors holds random Inception weights named as
pytorch-fid's state_dict (tests/python/inception_reference.py writes them). Feeds uint8 images of
sizes other than 299x299 through torch-fidelity's FeatureExtractorInceptionV3 (its own input path:
uint8, TF1-style bilinear resize, (x - 128) / 128) and writes DIR/isc_reference.safetensors with,
per batch, the images, torch-fidelity's 'logits_unbiased', its TF1 resize of the images, and the
logits of pytorch-fid's input path for contrast. Prints one JSON line.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

import pytorch_fid.inception as pfi

out_dir = sys.argv[1]
torch.manual_seed(20200921)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

state = load_file(os.path.join(out_dir, "weights.safetensors"))
# torch-fidelity loads its weights with torch.load; its load_state_dict is strict, so this also
# checks that pytorch-fid's names are torch-fidelity's.
pth = os.path.join(out_dir, "weights.pth")
torch.save(state, pth)
fidelity = FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=pth)

pfi.load_state_dict_from_url = lambda *args, **kwargs: state
fid_model = pfi.InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True).eval()


def noise_pixels(n, c, h, w):
    """Uniform uint8 noise: like the images the random weights' batch norms were calibrated on
    (inception_reference.py), so activations stay O(1) through the network."""
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)


batches = {
    # The case that matters for SAGAN: 32x32 colour images upsampled 9.3x.
    "rgb32": noise_pixels(3, 3, 32, 32),
    # Non-square, and a different ratio per axis.
    "rgb64x80": noise_pixels(2, 3, 64, 80),
    # Grayscale (Fashion-MNIST-like): torch-fidelity takes 3 channels, so it gets them replicated.
    "gray32": noise_pixels(2, 1, 32, 32),
}
out = {}
report = {}
with torch.no_grad():
    for name, pixels in batches.items():
        rgb = pixels.repeat(1, 3, 1, 1) if pixels.shape[1] == 1 else pixels
        (logits,) = fidelity(rgb)
        resized = interpolate_bilinear_2d_like_tensorflow1x(rgb.float(), size=(299, 299), align_corners=False)
        pool3 = fid_model(rgb.float() / 255)[0].squeeze(-1).squeeze(-1)
        fid_path_logits = pool3.mm(state["fc.weight"].T)
        out[f"{name}.pixels"] = pixels.contiguous()
        out[f"{name}.logits_unbiased"] = logits.contiguous()
        out[f"{name}.tf1_resized"] = resized.contiguous()
        out[f"{name}.fid_path_logits"] = fid_path_logits.contiguous()
        report[name] = {
            "logits_abs_max": logits.abs().max().item(),
            "fid_path_vs_fidelity_max_abs": (fid_path_logits - logits).abs().max().item(),
        }
save_file(out, os.path.join(out_dir, "isc_reference.safetensors"))
print(json.dumps(report))
