"""Reads and writes FID statistics files the way pytorch-fid does, for tests/reference_stats.rs.

Usage:
  stats_files.py strip IN OUT   load IN with pytorch-fid's compute_statistics_of_path (what its CLI
                                does with an .npz) and save mu and sigma alone to OUT with
                                np.savez_compressed, as `pytorch-fid --save-stats` does; prints JSON
                                with the arrays IN holds and its provenance, read with numpy.
  stats_files.py fid A B        pytorch-fid's Frechet distance between two .npz files; prints it.
  stats_files.py random OUT D   a valid foreign file of D-dimensional statistics.
"""
import json
import sys

import numpy as np
from pytorch_fid.fid_score import calculate_frechet_distance, compute_statistics_of_path

mode = sys.argv[1]
if mode == "strip":
    src, dst = sys.argv[2], sys.argv[3]
    mu, sigma = compute_statistics_of_path(src, None, 1, 0, "cpu")
    np.savez_compressed(dst, mu=mu, sigma=sigma)
    with np.load(src, allow_pickle=False) as f:
        names = sorted(f.files)
        provenance = json.loads(bytes(f["provenance"]).decode()) if "provenance" in f.files else None
    print(json.dumps({"arrays": names, "dim": int(mu.shape[0]), "provenance": provenance}))
elif mode == "fid":
    a = compute_statistics_of_path(sys.argv[2], None, 1, 0, "cpu")
    b = compute_statistics_of_path(sys.argv[3], None, 1, 0, "cpu")
    print(json.dumps({"fid": float(calculate_frechet_distance(a[0], a[1], b[0], b[1]))}))
elif mode == "random":
    d = int(sys.argv[3])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4 * d, d))
    np.savez_compressed(sys.argv[2], mu=x.mean(0), sigma=np.cov(x, rowvar=False))
else:
    sys.exit(f"unknown mode {mode}")
