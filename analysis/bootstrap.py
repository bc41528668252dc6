"""Two-level paired bootstrap for a top-1 gain (model − base, in points of %): seeds, then images.

Each model is a set of seeds (training runs), every one evaluated on the same validation images: a
(seeds × images) array of correctness (1-D for one run). The gain of the tables is the mean over
images of 100 · (the model's share of seeds right − the base's share). Each resample:

1. draws the model's seeds with replacement (as many as it has), and the base's seeds likewise,
   independently: the two models' seeds are separate trainings, not pairs;
2. draws n images with replacement, the same images for both models and all their drawn seeds (the
   images are crossed with the seeds, and the pairing over images is what makes the interval narrow);
3. takes the gain on those seeds and images.

So the interval covers the variation from training seed to training seed as well as the sampling of
the validation images. With one seed on a side, that side adds no seed-to-seed variation (none can be
measured); with k seeds, the seed level has k^k equally likely draws and, as any bootstrap of k values,
understates their variance by (k − 1)/k, which with 2–3 seeds is a coarse account of it. Resampling the
two crossed factors independently counts their interaction in both, so with many seeds it errs wide.
The interval is the percentile interval (numpy's default linear interpolation) of the resampled gains.

Draws, reproducible by a reader: image indices from ``numpy.random.default_rng(seed).random((resamples,
n))``, the model's seed indices from ``default_rng([seed, 1]).random((resamples, seeds))`` and the base's
from ``default_rng([seed, 2])``, each scaled by its count and truncated. Drawing those arrays in row
chunks yields the very same numbers (one double per draw, no buffered bits), so the result does not
depend on the chunk size. Seed index i is a model's i-th seed in ascending ``train.seed``
(``analysis.predictions.seeds_correct``). With one seed on each side this is the image-only paired
bootstrap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Indices drawn per chunk: bounds memory (ImageNet: 50k images x 1000 resamples would be 400 MB at once).
CHUNK_ELEMENTS = 4_000_000
MODEL_STREAM, BASE_STREAM = 1, 2  # default_rng([seed, stream]) of each model's seed draws


@dataclass(frozen=True)
class Bootstrap:
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95

    def interval(self, model, base) -> tuple[float, float]:
        return paired_gain_interval(model, base, self.resamples, self.seed, self.level)

    def legend(self) -> str:
        return (f"[low, high] = {100 * self.level:g}% two-level bootstrap interval of the top-1 gain over the "
                f"I-Net: each model's seeds resampled with replacement, then validation images, the same "
                f"images for both models; it covers seed-to-seed variation only where a model has several "
                f"seeds ({self.resamples} resamples, seed {self.seed})")


def _by_seed(correct) -> np.ndarray:
    array = np.asarray(correct, dtype=float)
    return array[None, :] if array.ndim == 1 else array


def resampled_gains(model, base, resamples: int = 1000, seed: int = 0,
                    chunk_elements: int = CHUNK_ELEMENTS) -> np.ndarray:
    """The gain (points of %) on each of ``resamples`` two-level resamples. ``model`` and ``base``:
    correctness per image (one run, 1-D) or per seed and image (seeds × images, the same images)."""
    m, b = _by_seed(model), _by_seed(base)
    if m.ndim != 2 or b.ndim != 2 or m.shape[1] != b.shape[1] or m.size == 0 or b.size == 0:
        raise ValueError("a paired bootstrap needs the same non-empty list of images for both models")
    n = m.shape[1]
    images, model_seeds, base_seeds = (np.random.default_rng(s) for s in (seed, [seed, MODEL_STREAM], [seed, BASE_STREAM]))
    single = len(m) == len(b) == 1
    diff = 100.0 * (m[0] - b[0]) if single else None
    gains = np.empty(resamples)
    rows = max(1, chunk_elements // n)
    for start in range(0, resamples, rows):
        size = min(rows, resamples - start)
        idx = _uniform_indices(images, size, n)
        if not single:  # per resample, each image's share of the drawn seeds that got it right
            diff = 100.0 * (_seed_weights(_uniform_indices(model_seeds, size, len(m)), len(m)) @ m
                            - _seed_weights(_uniform_indices(base_seeds, size, len(b)), len(b)) @ b)
            gains[start:start + size] = np.take_along_axis(diff, idx, axis=1).mean(axis=1)
        else:
            gains[start:start + size] = diff[idx].mean(axis=1)
    return gains


def _uniform_indices(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """(size, count) indices below ``count``: uniforms scaled and truncated."""
    # u * count < count in exact arithmetic; the minimum guards the last float rounding up to count
    return np.minimum((rng.random((size, count)) * count).astype(np.int64), count - 1)


def _seed_weights(draws: np.ndarray, seeds: int) -> np.ndarray:
    """(rows, seeds): how often each seed was drawn, over the number drawn."""
    counts = np.zeros((len(draws), seeds))
    np.add.at(counts, (np.arange(len(draws))[:, None], draws), 1.0)
    return counts / draws.shape[1]


def paired_gain_interval(model, base, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """(low, high) of the ``level`` percentile interval of the resampled gains."""
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(resampled_gains(model, base, resamples, seed), [tail, 100.0 - tail])
    return float(low), float(high)
