"""Loader benchmark: can the CPU make multi-resolution samples as fast as the standard recipe?

Measured side by side in one process with one thread, round-robin over the same files (one pass of
each pipeline per round, the median round reported), decode included:

  - decode alone (PIL, RGB);
  - the torchvision reference recipe: RandomResizedCrop 224 + flip + to float + normalise;
  - resolab's multi-resolution sample (``MultiResolutionTrainTransform``: one crop box resized to
    every size, uint8; normalisation happens later, on the device, once per batch);
  - for comparison: the chained resize order (crop -> largest, then each size from the previous
    one, uint8), and resolab's sample before issue #10 (float32, normalised on the CPU);

then a DataLoader worker sweep (img/s of resolab's loader against data.loader_workers) to size
``cpus_per_worker``, and the quality of the chained resize against the direct one (mean and max
absolute difference in grey levels on the same crops).

    python bench/loader.py                       # writes 64 JPEGs of ~330x460 px to a temp dir first
    python bench/loader.py --root ~/imagenet/train --limit 256 --json

With ``--json`` the last line is one JSON object (decode_img_per_s, torchvision_ref_img_per_s,
resolab_img_per_s, resolab_over_torchvision (P8), workers_img_per_s, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from torchvision import transforms as T  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

from orchestrator.data.loaders import (BILINEAR, IMAGENET_MEAN, IMAGENET_STD, MultiResolutionTrainTransform,  # noqa: E402
                               build_loader, load_rgb)

EXTENSIONS = (".jpg", ".jpeg", ".png")


def write_sample_jpegs(folder: Path, n: int = 64, seed: int = 0) -> list[Path]:
    """n JPEG files of about 330 x 460 px (ImageNet's typical size after its own resizing): smooth
    shapes plus noise, so that decode and resize cost what they cost on photographs."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(300, 360)), int(rng.integers(420, 500))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([np.sin(x / rng.uniform(10, 60) + c) * np.cos(y / rng.uniform(10, 60)) for c in range(3)], -1)
        img = (127 + 90 * base + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        path = folder / "c0" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def list_images(root: Path, limit: int) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise SystemExit(f"no image files ({', '.join(EXTENSIONS)}) under {root}")
    step = max(1, len(files) // limit)
    return files[::step][:limit]


class DirectUint8:
    """The crop box resized to every size directly (uint8), as resolab does; base of the variants."""

    def __init__(self, resolutions):
        self.resolutions = resolutions

    def __call__(self, img):
        img = F.to_image(img)
        top, left, h, w = T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
        flip = bool(torch.rand(1) < 0.5)
        outs = []
        for r in self.resolutions:
            x = F.resized_crop(img, top, left, h, w, [r, r], interpolation=BILINEAR, antialias=True)
            outs.append(F.horizontal_flip(x) if flip else x)
        return outs


class LegacyFloat(DirectUint8):
    """resolab's sample before issue #10: direct resize, then float32 and normalised on the CPU."""

    def __call__(self, img):
        return [F.normalize(F.to_dtype(x, torch.float32, scale=True), IMAGENET_MEAN, IMAGENET_STD)
                for x in super().__call__(img)]


class ChainedUint8(DirectUint8):
    """The alternative order: crop -> largest, then each size from the previous one (uint8)."""

    def __call__(self, img):
        img = F.to_image(img)
        top, left, h, w = T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
        flip = bool(torch.rand(1) < 0.5)
        outs, prev = [], None
        for r in self.resolutions:  # large to small
            if prev is None:
                x = F.resized_crop(img, top, left, h, w, [r, r], interpolation=BILINEAR, antialias=True)
                x = F.horizontal_flip(x) if flip else x
            else:
                x = F.resize(prev, [r, r], interpolation=BILINEAR, antialias=True)
            outs.append(x)
            prev = x
        return outs


def pipelines(resolutions):
    reference = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    resolab = MultiResolutionTrainTransform(resolutions, "single")
    chained, legacy = ChainedUint8(resolutions), LegacyFloat(resolutions)
    return {
        "decode": lambda p: load_rgb(str(p)),
        "torchvision_ref": lambda p: reference(load_rgb(str(p))),
        "resolab": lambda p: resolab(load_rgb(str(p))),
        "resolab_chained_uint8": lambda p: chained(load_rgb(str(p))),
        "resolab_legacy_float": lambda p: legacy(load_rgb(str(p))),
    }


def round_robin(variants: dict, files: list[Path], rounds: int) -> dict[str, float]:
    """img/s of each variant: the median over ``rounds`` rounds, one pass over ``files`` each per round."""
    times = {name: [] for name in variants}
    for name, fn in variants.items():  # warm-up
        fn(files[0])
    for _ in range(rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for p in files:
                fn(p)
            times[name].append(time.perf_counter() - t0)
    return {name: len(files) / statistics.median(t) for name, t in times.items()}


def resize_quality(files: list[Path], resolutions) -> dict[str, float]:
    """Chained against direct resize on the same crop and flip: |difference| in grey levels."""
    chained, direct = ChainedUint8(sorted(resolutions, reverse=True)), MultiResolutionTrainTransform(resolutions, "single")
    diffs, worst = [], 0.0
    for i, p in enumerate(files):
        img = load_rgb(str(p))
        torch.manual_seed(i)
        a = chained(img)
        torch.manual_seed(i)
        b = direct(img)
        for x, y in zip(a[1:], b[1:]):  # the largest is identical by construction
            d = (x.float() - y.float()).abs()
            diffs.append(d.mean().item())
            worst = max(worst, d.max().item())
    return {"chained_vs_direct_mean_abs_levels": statistics.mean(diffs), "chained_vs_direct_max_abs_levels": worst}


class _Files(torch.utils.data.Dataset):
    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return self.transform(load_rgb(str(self.files[i]))), 0


def worker_sweep(files: list[Path], resolutions, workers_list, batch_size: int, epochs: int) -> dict[int, float]:
    """img/s of resolab's training loader (collate included) against the number of loader workers.
    Each worker process uses one thread, as DataLoader workers do."""
    out = {}
    dataset = _Files(files, MultiResolutionTrainTransform(resolutions, "single"))
    for workers in workers_list:
        loader = build_loader(dataset, batch_size, shuffle=True, seed=0, workers=workers, drop_last=False)
        for _ in loader:  # start the workers and warm up
            break
        t0, n = time.perf_counter(), 0
        for _ in range(epochs):
            for xs, labels in loader:
                n += labels.numel()
        out[workers] = n / (time.perf_counter() - t0)
        del loader
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=None, help="folder of images (searched recursively)")
    p.add_argument("--limit", type=int, default=64, help="at most this many files, evenly spaced")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--resolutions", type=int, nargs="+", default=[224, 192, 160, 128, 96])
    p.add_argument("--workers", type=int, nargs="+", default=None, help="default 0 1 2 ... cpu count")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", action="store_true", help="end with one JSON object")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = list_images(args.root, args.limit) if args.root else write_sample_jpegs(Path(tmp), args.limit)
        torch.manual_seed(0)
        rates = round_robin(pipelines(args.resolutions), files, args.rounds)
        quality = resize_quality(files[:16], args.resolutions)
        workers_list = args.workers or list(range(0, (os.cpu_count() or 1) + 1))
        sweep = worker_sweep(files, args.resolutions, workers_list, args.batch_size, epochs=2)
    size = np.median([Image.open(f).size for f in files[:32]], axis=0) if args.root else None
    source = f"{args.root} ({len(files)} files, median {int(size[0])}x{int(size[1])} px)" if args.root \
        else f"{len(files)} generated JPEGs of ~330x460 px"
    print(f"{source} | 1 thread | resolutions {' '.join(map(str, args.resolutions))} | "
          f"median of {args.rounds} round-robin rounds")
    for name, rate in rates.items():
        print(f"  {name:24s}{rate:9.1f} img/s")
    ratio = rates["resolab"] / rates["torchvision_ref"]
    print(f"  P8 resolab / torchvision reference      {ratio:.3f}")
    print(f"  (before: legacy float sample / reference {rates['resolab_legacy_float'] / rates['torchvision_ref']:.3f})")
    print(f"  chained vs direct resize: mean |diff| {quality['chained_vs_direct_mean_abs_levels']:.2f} grey levels, "
          f"max {quality['chained_vs_direct_max_abs_levels']:.0f}")
    print("loader workers sweep (img/s, batch", args.batch_size, "):",
          "  ".join(f"{w}: {r:.0f}" for w, r in sweep.items()))
    if args.json:
        print(json.dumps({
            "decode_img_per_s": round(rates["decode"], 1),
            "torchvision_ref_img_per_s": round(rates["torchvision_ref"], 1),
            "resolab_img_per_s": round(rates["resolab"], 1),
            "resolab_chained_uint8_img_per_s": round(rates["resolab_chained_uint8"], 1),
            "resolab_legacy_float_img_per_s": round(rates["resolab_legacy_float"], 1),
            "resolab_over_torchvision": round(ratio, 3),
            "legacy_over_torchvision": round(rates["resolab_legacy_float"] / rates["torchvision_ref"], 3),
            **{k: round(v, 3) for k, v in quality.items()},
            "workers_img_per_s": {str(w): round(r, 1) for w, r in sweep.items()},
            "resolutions": args.resolutions, "files": len(files),
        }))


if __name__ == "__main__":
    main()
