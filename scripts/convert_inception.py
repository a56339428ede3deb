"""Convert pytorch-fid's Inception weights to the safetensors file `sagan` loads.

Usage: convert_inception.py IN.pth OUT.safetensors

IN is pytorch-fid's pt_inception-2015-12-05-6726825d.pth (pytorch-fid caches it in
~/.cache/torch/hub/checkpoints/). The tensor names are kept exactly, so sagan's loader checks them
against pytorch-fid's state_dict names.
"""
import sys

import torch
from safetensors.torch import save_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    # A plain state_dict: weights_only refuses anything that would run code while unpickling.
    state = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "fc.weight" not in state:
        sys.exit(f"{src}: not an Inception state_dict (no fc.weight)")
    if tuple(state["fc.weight"].shape) != (1008, 2048):
        sys.exit(
            f"{src}: fc.weight has shape {tuple(state['fc.weight'].shape)}, expected (1008, 2048); "
            "this is not pytorch-fid's FID Inception"
        )
    # safetensors refuses views and shared storage; the copies cost nothing at this size.
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, dst)
    print(f"wrote {len(state)} tensors to {dst}")


if __name__ == "__main__":
    main()
