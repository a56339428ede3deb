"""Reference values for tests/kid_precision_recall.rs: torch-fidelity 0.4.0's own KID and
precision/recall, and an independent NumPy/SciPy implementation of each paper's definition.

Usage: kid_pr_reference.py DIR K SUBSETS SUBSET_SIZE. DIR holds fake.npy and real.npy (float64
features [n, d]). Prints one JSON object.
"""
import json
import os
import sys

import numpy as np
import torch
from scipy.spatial.distance import cdist
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

d, k, subsets, subset_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fake = np.load(os.path.join(d, "fake.npy"))
real = np.load(os.path.join(d, "real.npy"))
assert fake.dtype == np.float64 and real.dtype == np.float64

tf_kid = kid_features_to_metric(
    torch.from_numpy(fake), torch.from_numpy(real),
    kid_subsets=subsets, kid_subset_size=subset_size, kid_kernel="poly", kid_kernel_poly_degree=3,
    kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1, rng_seed=2020, verbose=False,
)
tf_prc = prc_features_to_metric(
    torch.from_numpy(fake), torch.from_numpy(real),
    prc_neighborhood=k, prc_batch_size=10000, save_cpu_ram=False, verbose=False,
)


def own_kid(x_all, y_all):
    """Binkowski et al.: unbiased MMD^2, k(a, b) = (a.b / dim + 1)^3, subsets drawn as torch-fidelity draws them."""
    rng = np.random.RandomState(2020)
    dim = x_all.shape[1]
    values = []
    for _ in range(subsets):
        x = x_all[rng.choice(len(x_all), subset_size, replace=False)]
        y = y_all[rng.choice(len(y_all), subset_size, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        m = subset_size
        values.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2)
    return float(np.mean(values)), float(np.std(values))


def own_precision_recall(fake, real):
    """Kynkaanniemi et al.: a set's manifold is the union of balls to each point's k-th nearest neighbour."""
    def radii(x):
        return np.sort(cdist(x, x), axis=1)[:, k]  # column 0 is the point itself

    def coverage(queries, points):
        return float(np.mean(np.any(cdist(queries, points) <= radii(points)[None, :], axis=1)))

    return coverage(fake, real), coverage(real, fake)


kid_mean, kid_std = own_kid(fake, real)
precision, recall = own_precision_recall(fake, real)
print(json.dumps({
    "torch_fidelity": {
        "kid": [tf_kid["kernel_inception_distance_mean"], tf_kid["kernel_inception_distance_std"]],
        "precision": tf_prc["precision"], "recall": tf_prc["recall"],
    },
    "numpy": {"kid": [kid_mean, kid_std], "precision": precision, "recall": recall},
    "choice_2020": np.random.RandomState(2020).choice(50, 7, replace=False).tolist(),
}))
