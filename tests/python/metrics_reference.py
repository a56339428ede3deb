"""Reference values for tests/metrics_reference.rs from pytorch-fid and torch-fidelity themselves.

Usage: metrics_reference.py DIR. DIR holds feat1.npy, feat2.npy (features [n, d]), logits.npy
([n, classes]) and ours.npz (FID stats of feat1 as sagan wrote them). Writes numpy's own stats files
for sagan to read back (ref_*.npy, loaded_*.npy, numpy_savez*.npz, bad_*.npz) and prints one JSON
object.
"""
import json
import os
import sys

import numpy as np
import torch
from pytorch_fid.fid_score import calculate_frechet_distance, compute_statistics_of_path
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric

d = sys.argv[1]
feat1 = np.load(os.path.join(d, "feat1.npy"))
feat2 = np.load(os.path.join(d, "feat2.npy"))
logits = np.load(os.path.join(d, "logits.npy"))
assert feat1.dtype == np.float64 and logits.dtype == np.float64

# pytorch-fid's calculate_activation_statistics, verbatim.
mu1, sigma1 = np.mean(feat1, axis=0), np.cov(feat1, rowvar=False)
mu2, sigma2 = np.mean(feat2, axis=0), np.cov(feat2, rowvar=False)
np.save(os.path.join(d, "ref_mu1.npy"), mu1)
np.save(os.path.join(d, "ref_sigma1.npy"), sigma1)
np.save(os.path.join(d, "ref_mu2.npy"), mu2)
np.save(os.path.join(d, "ref_sigma2.npy"), sigma2)
np.savez(os.path.join(d, "numpy_savez.npz"), mu=mu2, sigma=sigma2)
np.savez_compressed(os.path.join(d, "numpy_savez_compressed.npz"), mu=mu2, sigma=sigma2)
# Files sagan must reject, each naming what was wrong.
np.savez(os.path.join(d, "bad_missing_sigma.npz"), mu=mu2)
np.savez(os.path.join(d, "bad_int_sigma.npz"), mu=mu2, sigma=sigma2.astype(np.int64))
np.savez(os.path.join(d, "bad_shape_sigma.npz"), mu=mu2, sigma=sigma2[:-1])

fidelity_stats1 = fid_features_to_statistics(torch.from_numpy(feat1))
fidelity_stats2 = fid_features_to_statistics(torch.from_numpy(feat2))

# pytorch-fid's loader on the file sagan wrote (the model is unused for .npz paths).
loaded_mu, loaded_sigma = compute_statistics_of_path(os.path.join(d, "ours.npz"), None, 50, feat1.shape[1], "cpu")
# Saved back so sagan can check that every bit it wrote arrived.
np.save(os.path.join(d, "loaded_mu.npy"), loaded_mu)
np.save(os.path.join(d, "loaded_sigma.npy"), loaded_sigma)

logits_t = torch.from_numpy(logits)
isc_as_given = isc_features_to_metric(logits_t, splits=10, shuffle=False)
isc_shuffled = isc_features_to_metric(logits_t, splits=10, shuffle=True, rng_seed=2020)
uniform = isc_features_to_metric(torch.zeros(100, 1008, dtype=torch.float64), splits=10, shuffle=False)

out = {
    "fid_pytorch_fid": float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2)),
    "fid_torch_fidelity": fid_statistics_to_metric(fidelity_stats1, fidelity_stats2, False)[
        "frechet_inception_distance"
    ],
    "self_fid_pytorch_fid": float(calculate_frechet_distance(mu1, sigma1, mu1, sigma1)),
    "self_fid_torch_fidelity": fid_statistics_to_metric(fidelity_stats1, fidelity_stats1, False)[
        "frechet_inception_distance"
    ],
    "trace_sigma1": float(np.trace(sigma1)),
    "loaded": {
        "mu_dtype": str(loaded_mu.dtype),
        "sigma_dtype": str(loaded_sigma.dtype),
        "mu_shape": list(loaded_mu.shape),
        "sigma_shape": list(loaded_sigma.shape),
        "max_abs_diff_mu": float(np.max(np.abs(loaded_mu - mu1))),
        "max_abs_diff_sigma": float(np.max(np.abs(loaded_sigma - sigma1))),
        "fid_vs_2": float(calculate_frechet_distance(loaded_mu, loaded_sigma, mu2, sigma2)),
    },
    "isc_as_given": [isc_as_given["inception_score_mean"], isc_as_given["inception_score_std"]],
    "isc_shuffled_2020": [isc_shuffled["inception_score_mean"], isc_shuffled["inception_score_std"]],
    "isc_uniform": [uniform["inception_score_mean"], uniform["inception_score_std"]],
    "permutation_2020": {str(n): np.random.RandomState(2020).permutation(n).tolist() for n in (1, 2, 1003, 50000)},
    "permutation_7_of_5": np.random.RandomState(7).permutation(5).tolist(),
    "permutation_max_seed": np.random.RandomState(2**32 - 1).permutation(300).tolist(),
}
print(json.dumps(out))
