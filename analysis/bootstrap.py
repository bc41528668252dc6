"""Paired bootstrap over validation images for a top-1 gain (model − base, in points of %).

Each resample draws n image indices with replacement, the same indices for both models, and takes
the gain on them: mean over the drawn images of 100 · (correct_model − correct_base). The interval is
the percentile interval (numpy's default linear interpolation) of those resampled gains. Correctness
may be fractional: the share of a model's seeds that got the image right.

Indices come from ``numpy.random.default_rng(seed).random((resamples, n))``, scaled by n and
truncated; drawing that array in row chunks yields the very same numbers (one double per draw, no
buffered bits), so the result does not depend on the chunk size and a reader can recompute it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Indices drawn per chunk: bounds memory (ImageNet: 50k images x 1000 resamples would be 400 MB at once).
CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Bootstrap:
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95

    def interval(self, model, base) -> tuple[float, float]:
        return paired_gain_interval(model, base, self.resamples, self.seed, self.level)

    def legend(self) -> str:
        return (f"[low, high] = {100 * self.level:g}% paired-bootstrap interval of the top-1 gain over the I-Net: "
                f"validation images resampled with replacement, the same images for both models "
                f"({self.resamples} resamples, seed {self.seed})")


def resample_indices(n: int, resamples: int, seed: int, chunk_elements: int = CHUNK_ELEMENTS):
    """Yields (first resample, index array of shape (rows, n)) chunk by chunk."""
    rng = np.random.default_rng(seed)
    rows = max(1, chunk_elements // max(1, n))
    for start in range(0, resamples, rows):
        size = min(rows, resamples - start)
        # u * n < n in exact arithmetic; the minimum guards the last float rounding up to n
        yield start, np.minimum((rng.random((size, n)) * n).astype(np.int64), n - 1)


def resampled_gains(model, base, resamples: int = 1000, seed: int = 0,
                    chunk_elements: int = CHUNK_ELEMENTS) -> np.ndarray:
    """The gain (points of %) on each of ``resamples`` paired resamples of the images."""
    diff = 100.0 * (np.asarray(model, dtype=float) - np.asarray(base, dtype=float))
    if diff.ndim != 1 or len(diff) == 0:
        raise ValueError("a paired bootstrap needs the same non-empty list of images for both models")
    gains = np.empty(resamples)
    for start, indices in resample_indices(len(diff), resamples, seed, chunk_elements):
        gains[start:start + len(indices)] = diff[indices].mean(axis=1)
    return gains


def paired_gain_interval(model, base, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """(low, high) of the ``level`` percentile interval of the resampled gains."""
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(resampled_gains(model, base, resamples, seed), [tail, 100.0 - tail])
    return float(low), float(high)
