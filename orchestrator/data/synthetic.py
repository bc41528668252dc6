"""A built-in image dataset whose accuracy depends on input resolution; no download needed.

Each class is a coarse colour family of the object (visible at any resolution) times a fine stripe
texture of one orientation (clear at 48-64 px, faint at 32, gone at 16-24); the object's shape,
size, position and rotation are random nuisances. A classifier that sees few pixels can tell the
colour families apart but not the textures, so low resolutions top out near 1 / (number of
textures) of the accuracy that high resolutions reach: the effect the train x test resolution
matrix measures. With ``ambiguous_fraction`` > 0, that share of objects takes a colour between two
families: hard examples at every resolution, so that top-1 has headroom even at the top. With
``ambiguous_texture_fraction`` > 0, that share takes a stripe orientation between two textures instead:
hard examples for the cue that only the high resolutions see, which leaves the colour cue as it is.
``pixel_noise`` sets the grey noise drawn at each image's own size: downsizing averages it away, so a
small input is cleaner than a large one. ``stripe_period`` sets the range of stripe periods (in units of
the base period): a range reaching above 1 makes coarse stripes, readable at lower resolutions, part of
the texture cue, so the accuracy a resolution reaches grows with it step by step.

Written once as an ImageFolder in ImageNet layout (``root/train/<class>/*.png``, ``root/val/...``),
atomically, so several processes (Ray workers, parallel trials) may ask for the same root at once.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from jobspec import SyntheticConfig

# Bump when the drawing changes: it is part of the settings hash, so old data is never reused.
FORMAT_VERSION = 3
MARKER = ".complete"
# Settings that came after data folders were first named: they enter the folder's hash only when set
# away from their defaults, which draw the images as before.
ADDED_AFTER_FOLDERS = ("ambiguous_texture_fraction", "pixel_noise", "stripe_period")
SHAPES = ("disc", "square", "triangle", "cross", "ring")  # drawn at random: a nuisance, not a class cue
# The coarse class cue, visible at any resolution: the object's colour family (hue, 0-1).
HUES = {"red": 0.0, "yellow": 0.16, "green": 0.33, "blue": 0.6, "purple": 0.8}
# Stripe period as a fraction of the image's shorter side: after the eval resize (shorter side
# S / 0.875) ~4.6 px at S = 48 (clear), ~3 px at S = 32 (visible), ~2.3 px at S = 24 (faint),
# ~1.5 px at S = 16 (gone: below the 2-pixel Nyquist limit).
STRIPE_PERIOD = 1 / 12


def textures_for(num_classes: int) -> list[float]:
    """Stripe orientations in degrees: two (0, 90) suffice for up to 10 classes, four for 20."""
    if num_classes <= 2 * len(HUES):
        return [0.0, 90.0]
    if num_classes <= 4 * len(HUES):
        return [0.0, 45.0, 90.0, 135.0]
    raise ValueError(f"the synthetic dataset has at most {4 * len(HUES)} classes, got num_classes={num_classes}")


def class_names(num_classes: int) -> list[str]:
    """Folder names, zero-padded so that ImageFolder's sorted order is the class index order."""
    textures = textures_for(num_classes)
    hues = list(HUES)
    return [f"{c:02d}_{hues[c // len(textures)]}_stripes{int(textures[c % len(textures)]):03d}"
            for c in range(num_classes)]


def settings(cfg: SyntheticConfig, num_classes: int) -> dict:
    values = cfg.model_dump()
    for key in ADDED_AFTER_FOLDERS:  # at their defaults, datasets written before keep their folder
        if values[key] == SyntheticConfig.model_fields[key].default:
            del values[key]
    return {**values, "num_classes": num_classes, "format_version": FORMAT_VERSION}


def default_synthetic_root(cfg: SyntheticConfig, num_classes: int = 10) -> Path:
    """<project>/.resolab/data/synthetic-<hash>, or $RESOLAB_HOME/data/synthetic-<hash>."""
    home = os.environ.get("RESOLAB_HOME")
    base = Path(home) if home else Path(__file__).resolve().parents[2] / ".resolab"  # <project>/orchestrator/data/
    digest = hashlib.sha256(json.dumps(settings(cfg, num_classes), sort_keys=True).encode()).hexdigest()
    return base / "data" / f"synthetic-{digest[:12]}"


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _signed_distance(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Positive inside the shape, in pixels, for a shape of outer radius r centred at u = v = 0."""
    if shape == "disc":
        return r - np.hypot(u, v)
    if shape == "square":
        return 0.8 * r - np.maximum(abs(u), abs(v))
    if shape == "triangle":  # equilateral, circumradius r, inradius r / 2
        normals = [(np.cos(a), np.sin(a)) for a in np.deg2rad([90, 210, 330])]
        return r / 2 - np.max([nu * u + nv * v for nu, nv in normals], axis=0)
    if shape == "cross":  # two bars of half-width 0.35 r
        bar_h = np.minimum(r - abs(u), 0.35 * r - abs(v))
        bar_v = np.minimum(0.35 * r - abs(u), r - abs(v))
        return np.maximum(bar_h, bar_v)
    if shape == "ring":
        rho = np.hypot(u, v)
        return np.minimum(r - rho, rho - 0.45 * r)
    raise ValueError(shape)


def ambiguous_hue(rng: np.random.Generator, hue: float) -> float:
    """A hue anywhere between the family's own and a neighbouring family's (around the colour circle).

    The class stays the family the object was drawn for. Half of these objects lie nearer the
    neighbour, among the neighbour's own ambiguous objects, so no model at any resolution can tell
    them apart: top-1 tops out near 1 - ambiguous_fraction / 2 everywhere, which leaves headroom at the
    top resolutions while the stripe cue that separates the resolutions stays as it is."""
    families = sorted(HUES.values())
    i = families.index(hue)
    neighbour = families[(i + (1 if rng.random() < 0.5 else -1)) % len(families)]
    towards = (neighbour - hue + 0.5) % 1.0 - 0.5  # signed, the short way round the circle
    return (hue + rng.uniform(0, 1) * towards) % 1.0


def ambiguous_orientation(rng: np.random.Generator, texture: float, spacing: float) -> float:
    """A stripe orientation (degrees, mod 180) anywhere between the class's own and a neighbouring
    texture's, ``spacing`` apart: as ``ambiguous_hue`` for the colour, half of these objects lie nearer
    the neighbour's orientation, so top-1 tops out near 1 - fraction / 2 wherever the stripes decide."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    return (texture + side * rng.uniform(0, 1) * spacing) % 180.0


def draw_image(rng: np.random.Generator, label: int, num_classes: int, cfg: SyntheticConfig) -> np.ndarray:
    """One H x W x 3 uint8 image of class ``label``."""
    textures = textures_for(num_classes)
    hue, texture = list(HUES.values())[label // len(textures)], textures[label % len(textures)]
    shape = SHAPES[rng.integers(len(SHAPES))]
    w, h = rng.integers(cfg.min_size, cfg.max_size + 1, size=2)
    x, y = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]

    # Background: a random greyish colour (saturation <= 0.25, so it never looks like a class's
    # colour family), a smooth ramp and pixel noise: flat regions carry no label information.
    bg = _hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.25), rng.uniform(0.15, 0.95))
    ramp_angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(ramp_angle) * x + np.sin(ramp_angle) * y) * np.float32(rng.uniform(-0.25, 0.25) / max(w, h))

    # Object: random size, position and rotation; it fits in the image (corners reach 1.13 r).
    side = min(w, h)
    r = rng.uniform(0.28, 0.42) * side
    cx, cy = rng.uniform(1.15 * r, w - 1.15 * r), rng.uniform(1.15 * r, h - 1.15 * r)
    rot = np.deg2rad(rng.uniform(-30, 30))
    u = np.cos(rot) * (x - cx) + np.sin(rot) * (y - cy)
    v = -np.sin(rot) * (x - cx) + np.cos(rot) * (y - cy)
    coverage = np.clip(_signed_distance(shape, u, v, r) + 0.5, 0, 1)  # 1-px soft edge

    # Texture: sinusoidal stripes whose mean colour is the same for every orientation, so that a
    # blurred (low-resolution) object looks alike whatever its texture class.
    spacing = 180.0 / len(textures)
    if cfg.ambiguous_texture_fraction > 0 and rng.random() < cfg.ambiguous_texture_fraction:
        texture = ambiguous_orientation(rng, texture, spacing)  # drawn only when > 0: other images stay
    phi = np.deg2rad(texture + rng.uniform(-spacing / 5, spacing / 5))
    period = side * STRIPE_PERIOD * rng.uniform(*cfg.stripe_period)
    across = -np.sin(phi) * x + np.cos(phi) * y  # coordinate across the stripes (y for phi = 0)
    stripes = 0.5 + 0.5 * np.sin(np.float32(2 * np.pi / period) * across + np.float32(rng.uniform(0, 2 * np.pi)))
    # Object colour: the class's hue (+-0.03), saturated; the second stripe colour is a darker shade.
    if cfg.ambiguous_fraction > 0 and rng.random() < cfg.ambiguous_fraction:
        hue = ambiguous_hue(rng, hue)
    fg = _hsv_to_rgb((hue + rng.uniform(-0.03, 0.03)) % 1.0, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
    fg_alt = fg * np.float32(1 - rng.uniform(0.55, 0.8))

    # pixel = (1 - coverage) * (bg + ramp) + coverage * (fg + stripes * (fg_alt - fg)) + noise
    a = cfg.pixel_noise  # uniform in [-a, a): std a / sqrt(3), 0.03 at the default 0.05
    noise = rng.random((h, w), dtype=np.float32) * np.float32(2 * a) - np.float32(a)
    per_pixel = np.stack([np.ones_like(coverage), ramp * (1 - coverage) + noise, coverage, coverage * stripes], -1)
    colours = np.stack([bg, np.ones(3, np.float32), fg - bg, (fg_alt - fg).astype(np.float32)])
    img = per_pixel @ (colours * 255) + 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def _write_split(split_dir: Path, count: int, split_id: int, cfg: SyntheticConfig, num_classes: int) -> None:
    names = class_names(num_classes)
    for name in names:
        (split_dir / name).mkdir(parents=True)

    def write_one(i: int) -> None:
        label = i % num_classes  # classes take turns: counts differ by at most one
        rng = np.random.default_rng([cfg.seed, split_id, i])  # one stream per image: order-free
        Image.fromarray(draw_image(rng, label, num_classes, cfg)).save(
            split_dir / names[label] / f"{i:06d}.png", compress_level=1)

    # Threads, not processes: PNG encoding and numpy release the GIL, and threads are safe inside
    # any caller (Ray workers, forked DataLoader workers) where starting processes may not be.
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(write_one, range(count)))


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except FileNotFoundError:
        return None


def _check_complete(root: Path, wanted: dict) -> bool:
    """True if root already holds this dataset; raise if it holds something else."""
    if not root.exists():
        return False
    found = _read_marker(root)
    if found == wanted:
        return True
    if found is None and not any(root.iterdir()):
        return False  # an empty folder made by the user: ours to fill
    what = "other synthetic settings " + json.dumps(found) if found else "files that are not a complete synthetic dataset"
    raise FileExistsError(
        f"{root} already holds {what}; wanted {json.dumps(wanted)}. "
        "Delete that folder, or point data.root elsewhere (or leave it unset to use a per-settings default).")


def write_synthetic_imagefolder(root: Path, cfg: SyntheticConfig, num_classes: int = 10) -> Path:
    """Write the dataset to ``root`` unless it is already there; return ``root``.

    Safe to call from several processes at once: each writes a private sibling folder and renames
    it into place; a writer that loses the race discards its copy and uses the winner's.
    """
    root = Path(root)
    wanted = settings(cfg, num_classes)
    textures_for(num_classes)  # fail on an impossible class count before writing anything
    if _check_complete(root, wanted):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_split(tmp / "train", cfg.num_train, 0, cfg, num_classes)
        _write_split(tmp / "val", cfg.num_val, 1, cfg, num_classes)
        (tmp / MARKER).write_text(json.dumps(wanted, sort_keys=True))
        try:
            os.rename(tmp, root)  # atomic; replaces an empty folder, fails on a non-empty one
        except OSError:
            if not root.exists():
                raise  # a real failure, not a lost race
            # another writer got there first; its marker is checked below
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not _check_complete(root, wanted):
        raise RuntimeError(f"could not write the synthetic dataset to {root}")
    return root
