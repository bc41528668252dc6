"""Transforms, the synthetic dataset, dataset checks and loaders, on real image files in tmp_path."""
from __future__ import annotations

import json
import multiprocessing
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from orchestrator.data.loaders import (IMAGENET_MEAN, IMAGENET_STD, CorruptImageError, DatasetError,
                               MultiResolutionEvalTransform, MultiResolutionTrainTransform,
                               build_calibration_images, build_calibration_loader, build_loader, build_train_dataset,
                               build_val_dataset, resolve_data_root, set_epoch)
from jobspec import ConfigError, DataConfig, JobConfig, SyntheticConfig
from orchestrator.data.synthetic import (HUES, MARKER, ambiguous_hue, ambiguous_orientation, class_names, default_synthetic_root, draw_image,
                                    write_synthetic_imagefolder)

BILINEAR = F.InterpolationMode.BILINEAR
SMALL = SyntheticConfig(num_train=100, num_val=30, min_size=48, max_size=80, seed=0)


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    """A transform's uint8 output as float pixel values in [0, 1] (normalisation happens on the device)."""
    assert x.dtype == torch.uint8
    return x.float() / 255


def smooth_asymmetric_image(w: int = 160, h: int = 120) -> Image.Image:
    """Red rises left to right, green top to bottom, a blue blob near the top-left corner: smooth
    (so resizing twice ~ resizing once) but every flip or shift changes many pixels."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x / w, y / h, np.exp(-((x - 40) ** 2 + (y - 30) ** 2) / 800)], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return write_synthetic_imagefolder(tmp_path_factory.mktemp("syn") / "data", SMALL)


def synthetic_data(root: Path, **overrides) -> DataConfig:
    return DataConfig(dataset="synthetic", root=str(root), synthetic=SMALL, **overrides)


# ----------------------------------------------------------------------------- train transform

def downscale_errors(crop: str, seeds=range(10)) -> np.ndarray:
    """Mean |resize(largest output) - smaller output| per seed and smaller resolution."""
    transform, img = MultiResolutionTrainTransform([64, 32, 16], crop), smooth_asymmetric_image()
    errors = []
    for seed in seeds:
        torch.manual_seed(seed)
        outs = [unnormalize(o) for o in transform(img)]
        errors.append([(F.resize(outs[0], [r, r], interpolation=BILINEAR, antialias=True) - o).abs().mean().item()
                       for r, o in zip((32, 16), outs[1:])])
    return np.array(errors)


def test_single_crop_gives_downscaled_views_of_one_crop():
    assert downscale_errors("single").max() < 0.005  # pixel values in [0, 1]


def test_multi_crop_draws_independent_crops():
    errors = downscale_errors("multi")
    assert errors.mean() > 0.05 and (errors > 0.02).mean() > 0.8


def orientations(outputs) -> list[bool]:
    """True where red (x gradient of the source) still rises left to right."""
    return [bool(o[0, :, -1].float().mean() > o[0, :, 0].float().mean()) for o in outputs]


@pytest.mark.parametrize("crop", ["single", "multi"])
def test_flip_is_shared_only_with_single_crop(crop):
    transform, img = MultiResolutionTrainTransform([48, 32, 24, 16], crop), smooth_asymmetric_image()
    draws = []
    for seed in range(30):
        torch.manual_seed(seed)
        draws.append(orientations(transform(img)))
    agree = [len(set(d)) == 1 for d in draws]
    assert {d[0] for d in draws} == {True, False}  # the flip does happen
    assert all(agree) if crop == "single" else not all(agree)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.35, 1.0), (0.25, 0.25)])
def test_crop_area_stays_within_crop_scale(scale):
    img = F.to_image(Image.fromarray(np.zeros((90, 120, 3), np.uint8)))
    transform = MultiResolutionTrainTransform([32], "single", scale)
    torch.manual_seed(0)
    areas = [h * w / (90 * 120) for (_, _, h, w), _ in (transform._draw(img) for _ in range(300))]
    # Integer box sides round the area by up to about one row and one column of pixels.
    assert scale[0] - 0.03 <= min(areas) and max(areas) <= scale[1] + 0.03
    if scale[0] == scale[1]:
        assert max(areas) - min(areas) < 0.06
    else:  # the whole range is drawn, not one end of it
        assert min(areas) < scale[0] + 0.1 and max(areas) > scale[1] - 0.1


def test_repeated_resolutions():
    img = smooth_asymmetric_image()
    torch.manual_seed(0)
    same = MultiResolutionTrainTransform([32, 32, 32], "single")(img)
    assert [o.shape for o in same] == [(3, 32, 32)] * 3
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], same[2])
    torch.manual_seed(0)
    multi = MultiResolutionTrainTransform([32, 32, 32], "multi")(img)
    assert not torch.equal(multi[0], multi[1])


# ----------------------------------------------------------------------------- eval transform

def test_eval_transform_sizes_and_order():
    outs = MultiResolutionEvalTransform([64, 48, 32, 20])(smooth_asymmetric_image())
    assert [tuple(o.shape) for o in outs] == [(3, 64, 64), (3, 48, 48), (3, 32, 32), (3, 20, 20)]
    assert all(o.dtype == torch.uint8 for o in outs)  # normalised on the device, not here


def test_eval_center_crop_matches_hand_computation():
    # 64 x 32 image: red = 4 * x, green = 8 * y (0..255 levels). S = 14: the shorter side goes to
    # round(14 / 0.875) = 16, i.e. a 2x reduction to 32 x 16; the 14 x 14 centre crop then starts at
    # row 1, column 9. A 2x bilinear (triangle) reduction averages a linear ramp exactly, so output
    # pixel j holds the ramp's value at source coordinate 2 j + 0.5.
    y, x = np.mgrid[0:32, 0:64]
    img = Image.fromarray(np.stack([4 * x, 8 * y, np.full_like(x, 100)], -1).astype(np.uint8))
    out = unnormalize(MultiResolutionEvalTransform([14])(img)[0]) * 255
    source = lambda j: 2 * j + 0.5
    expected_red = 4 * source(torch.arange(9, 23.0)).expand(14, 14)
    expected_green = 8 * source(torch.arange(1, 15.0))[:, None].expand(14, 14)
    torch.testing.assert_close(out[0], expected_red, atol=1e-3, rtol=0)
    torch.testing.assert_close(out[1], expected_green, atol=1e-3, rtol=0)
    torch.testing.assert_close(out[2], torch.full((14, 14), 100.0), atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- synthetic dataset

def pixels(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(Image.open(p)) for p in sorted(root.rglob("*.png"))}


def test_synthetic_layout_counts_and_sizes(synthetic_root):
    for split, total in (("train", SMALL.num_train), ("val", SMALL.num_val)):
        dirs = sorted((synthetic_root / split).iterdir())
        assert [d.name for d in dirs] == class_names(10)
        counts = [len(list(d.glob("*.png"))) for d in dirs]
        assert sum(counts) == total and max(counts) - min(counts) <= 1
    sizes = [Image.open(p).size for p in synthetic_root.rglob("*.png")]
    assert all(SMALL.min_size <= s <= SMALL.max_size for size in sizes for s in size)
    assert len({w for w, h in sizes}) > 10 and any(w != h for w, h in sizes)  # varied, not all square
    assert json.loads((synthetic_root / MARKER).read_text())["seed"] == SMALL.seed


def test_synthetic_is_deterministic_in_seed(synthetic_root, tmp_path):
    again = pixels(write_synthetic_imagefolder(tmp_path / "again", SMALL))
    first = pixels(synthetic_root)
    assert again.keys() == first.keys() and all(np.array_equal(again[k], first[k]) for k in first)
    other = pixels(write_synthetic_imagefolder(tmp_path / "other", SyntheticConfig(**{**vars(SMALL), "seed": 1})))
    assert sum(not np.array_equal(other[k], first[k]) for k in first) == len(first)


def test_synthetic_marker_short_circuits_and_guards_settings(synthetic_root):
    mtime = (synthetic_root / MARKER).stat().st_mtime_ns
    start = time.perf_counter()
    assert write_synthetic_imagefolder(synthetic_root, SMALL) == synthetic_root
    assert time.perf_counter() - start < 0.05
    assert (synthetic_root / MARKER).stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match="other synthetic settings"):
        write_synthetic_imagefolder(synthetic_root, SyntheticConfig(**{**vars(SMALL), "seed": 5}))


def test_synthetic_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a dataset")
    with pytest.raises(FileExistsError, match="not a complete synthetic dataset"):
        write_synthetic_imagefolder(tmp_path / "mine", SMALL)


def _write_after(barrier, root, cfg):
    barrier.wait()
    write_synthetic_imagefolder(root, cfg)


def test_concurrent_writers_leave_one_complete_dataset(tmp_path):
    cfg = SyntheticConfig(num_train=60, num_val=20, min_size=32, max_size=48, seed=3)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_write_after, args=(barrier, tmp_path / "data", cfg)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # the losers' temporary copies are gone
    assert len(list((tmp_path / "data" / "train").rglob("*.png"))) == 60
    written, reference = pixels(tmp_path / "data"), pixels(write_synthetic_imagefolder(tmp_path / "ref", cfg))
    assert written.keys() == reference.keys() and all(np.array_equal(written[k], reference[k]) for k in written)


def stripe_orientation(img: np.ndarray) -> float:
    """(vertical - horizontal) mean absolute gradient, normalised: > 0 for horizontal stripes."""
    g = img.astype(np.float32).mean(-1)
    dy, dx = np.abs(np.diff(g, axis=0)).mean(), np.abs(np.diff(g, axis=1)).mean()
    return (dy - dx) / (dy + dx)


def separation(root: Path, side: int | None) -> float:
    """d' between the two texture classes of every shape, with images optionally reduced to a
    shorter side of `side` px and scaled back up (what a low-resolution network gets to see)."""
    stats = {0: [], 1: []}
    for label, name in enumerate(class_names(10)):
        for path in (root / "train" / name).glob("*.png"):
            img = Image.open(path)
            if side:
                k = side / min(img.size)
                small = img.resize((round(img.width * k), round(img.height * k)), Image.BILINEAR)
                img = small.resize(img.size, Image.BILINEAR)
            stats[label % 2].append(stripe_orientation(np.asarray(img)))
    a, b = np.array(stats[0]), np.array(stats[1])
    return abs(a.mean() - b.mean()) / np.sqrt((a.var() + b.var()) / 2)


def test_synthetic_texture_needs_resolution(synthetic_root):
    assert separation(synthetic_root, None) > 4  # full size: textures are obvious
    assert separation(synthetic_root, 12) < 0.5  # 12 px: the two textures of a shape look alike


def object_hue(img: np.ndarray) -> float:
    """The hue (0-1) of the most saturated pixels: the object's, not the greyish background's."""
    import colorsys
    rgb = img.reshape(-1, 3).astype(np.float64) / 255
    saturation = rgb.max(1) - rgb.min(1)
    r, g, b = rgb[saturation >= np.quantile(saturation, 0.9)].mean(0)
    return colorsys.rgb_to_hsv(r, g, b)[0]


def circular_gap(a: float, b: float) -> float:
    return abs((a - b + 0.5) % 1.0 - 0.5)


def test_ambiguous_objects_take_colours_between_two_families():
    families = sorted(HUES.values())
    nearest = lambda h: min(families, key=lambda f: circular_gap(h, f))  # noqa: E731
    plain, ambiguous = SyntheticConfig(min_size=48, max_size=48), SyntheticConfig(min_size=48, max_size=48,
                                                                                  ambiguous_fraction=1.0)
    wrong_family = {"plain": 0, "ambiguous": 0}
    n = 200
    for i in range(n):
        label = i % 10
        own = list(HUES.values())[label // 2]
        for name, cfg in (("plain", plain), ("ambiguous", ambiguous)):
            hue = object_hue(draw_image(np.random.default_rng([7, i]), label, 10, cfg))
            wrong_family[name] += nearest(hue) != own
    # Plain objects sit on their family's hue; about half of the ambiguous ones (hue uniform on the
    # way to a neighbour) lie nearer the neighbour: what caps top-1 near 1 - fraction / 2.
    assert wrong_family["plain"] == 0
    assert 0.35 * n < wrong_family["ambiguous"] < 0.65 * n


@pytest.mark.parametrize("value, bound", [(1.5, "<= 1"), (-0.1, ">= 0")])
def test_ambiguous_fraction_outside_0_to_1_is_a_config_error_naming_the_bound(value, bound):
    with pytest.raises(ConfigError, match=rf"data\.synthetic\.ambiguous_fraction must be {bound}, got {value}"):
        JobConfig.parse({"data": {"synthetic": {"ambiguous_fraction": value}}})


def test_ambiguous_hue_stays_on_the_short_arc_to_a_neighbour():
    rng = np.random.default_rng(0)
    families = sorted(HUES.values())
    for i, own in enumerate(families):
        left, right = families[i - 1], families[(i + 1) % len(families)]
        sides = set()
        for _ in range(200):
            hue = ambiguous_hue(rng, own)
            to_left = circular_gap(hue, own) + circular_gap(hue, left) - circular_gap(own, left)
            to_right = circular_gap(hue, own) + circular_gap(hue, right) - circular_gap(own, right)
            assert min(to_left, to_right) < 1e-9, (own, hue)  # on one of the two arcs
            sides.add("left" if to_left < 1e-9 else "right")
        assert sides == {"left", "right"}  # red (0.0) also goes round to purple (0.8)


def grey_spectrum(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|FFT| of a square image's grey level, centred, with each bin's wave vector (kx, ky) in cycles per side."""
    grey = img.astype(np.float32).mean(-1)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean())))
    half = grey.shape[0] // 2
    ky, kx = np.mgrid[-half:grey.shape[0] - half, -half:grey.shape[1] - half]
    return spectrum, kx, ky


def stripe_angle(img: np.ndarray) -> float:
    """The stripes' orientation in degrees (mod 180): the strongest spatial frequency near the stripe
    frequency (12 cycles per image side, +-10 %) of the grey image; its wave vector is across the stripes."""
    spectrum, kx, ky = grey_spectrum(img)
    band = (np.hypot(kx, ky) > 9) & (np.hypot(kx, ky) < 15)
    peak = np.argmax(np.where(band, spectrum, 0))
    return (np.degrees(np.arctan2(ky.flat[peak], kx.flat[peak])) - 90.0) % 180.0


def orientation_gap(a: float, b: float) -> float:
    return abs((a - b + 90.0) % 180.0 - 90.0)


def test_texture_ambiguous_objects_take_orientations_between_the_two_textures():
    plain = SyntheticConfig(min_size=64, max_size=64)
    ambiguous = SyntheticConfig(min_size=64, max_size=64, ambiguous_texture_fraction=1.0)
    wrong_texture = {"plain": 0, "ambiguous": 0}
    n = 200
    for i in range(n):
        label = i % 10
        own = (0.0, 90.0)[label % 2]
        for name, cfg in (("plain", plain), ("ambiguous", ambiguous)):
            measured = stripe_angle(draw_image(np.random.default_rng([7, i]), label, 10, cfg))
            wrong_texture[name] += orientation_gap(measured, own) > 45.0
    # Plain stripes lie within their texture's jitter (+-18 degrees; the spectrum misreads the odd
    # image); about half of the ambiguous ones lie nearer the other texture: top-1 near 1 - fraction / 2.
    assert wrong_texture["plain"] <= 0.02 * n
    assert 0.35 * n < wrong_texture["ambiguous"] < 0.65 * n


def test_pixel_noise_scales_the_same_noise_draw():
    """Images drawn from one stream differ between noise levels by the noise term alone: against a
    noise-free image, 0.3 gives six times the deviations of the default 0.05, whose std is 0.05 / sqrt(3)."""
    def draw(noise):
        cfg = SyntheticConfig(min_size=64, max_size=64, pixel_noise=noise)
        return draw_image(np.random.default_rng([3, 1]), 4, 10, cfg).astype(np.float64)
    clean, default, strong = draw(0.0), draw(0.05), draw(0.3)
    inside = (clean > 80) & (clean < 170)  # no clipping at 0 or 255, even at 0.3 (+-77 grey levels)
    d_default, d_strong = (default - clean)[inside], (strong - clean)[inside]
    assert d_default.std() == pytest.approx(255 * 0.05 / np.sqrt(3), rel=0.05)
    slope = (d_default * d_strong).sum() / (d_default * d_default).sum()
    assert slope == pytest.approx(6.0, rel=0.02)
    # Each difference is off by at most one grey level of rounding: 6 x 1 + 1.
    assert np.abs(d_strong - 6 * d_default).max() <= 7
    assert default_synthetic_root(SyntheticConfig(pixel_noise=0.05)) == default_synthetic_root(SyntheticConfig())
    assert default_synthetic_root(SyntheticConfig(pixel_noise=0.3)) != default_synthetic_root(SyntheticConfig())


def stripe_cycles(img: np.ndarray) -> float:
    """Cycles of the stripes per image side (square images): the radius of the grey image's strongest
    spatial frequency above 4 cycles (below that lie the object's outline and the background ramp)."""
    spectrum, kx, ky = grey_spectrum(img)
    radius = np.hypot(kx, ky)
    return float(radius.flat[np.argmax(np.where(radius > 4, spectrum, 0))])


def test_stripe_period_sets_the_range_of_stripe_frequencies():
    """The default draws periods of 1/12 of the side +-10 % (12 cycles per side); [2, 2] doubles every
    period (6 cycles); [1, 2] spreads the periods over that whole range."""
    def cycles(period):
        cfg = SyntheticConfig(min_size=96, max_size=96, pixel_noise=0.0, stripe_period=period)
        return np.array([stripe_cycles(draw_image(np.random.default_rng([5, i]), i % 10, 10, cfg)) for i in range(60)])
    default, coarse, graded = cycles([0.9, 1.1]), cycles([2.0, 2.0]), cycles([1.0, 2.0])
    assert np.median(default) == pytest.approx(12, abs=1)
    assert np.median(coarse) == pytest.approx(6, abs=0.6)
    assert np.mean(np.abs(coarse - 6) <= 1) > 0.9
    assert graded.min() <= 7 and graded.max() >= 11  # both ends of [1, 2] x 1/12: 12 down to 6 cycles
    assert 7.5 < np.median(graded) < 10.5  # 8 cycles at the median period of 1.5 / 12
    assert default_synthetic_root(SyntheticConfig(stripe_period=[0.9, 1.1])) == default_synthetic_root(SyntheticConfig())
    assert default_synthetic_root(SyntheticConfig(stripe_period=[1.0, 2.0])) != default_synthetic_root(SyntheticConfig())


@pytest.mark.parametrize("period", [[1.5, 1.0], [0.2, 1.0], [1.0, 6.0], [1.0]])
def test_stripe_period_must_be_a_range_of_base_periods(period):
    with pytest.raises(ConfigError, match=re.escape("data.synthetic.stripe_period must be [min, max] with 0.5 <= min")):
        JobConfig.parse({"data": {"synthetic": {"stripe_period": period}}}).validate()


def test_ambiguous_orientation_stays_between_the_texture_and_a_neighbour_on_either_side():
    rng = np.random.default_rng(0)
    offsets = [ambiguous_orientation(rng, 90.0, 90.0) - 90.0 for _ in range(400)]  # in [0, 180)
    assert all(-90.0 <= d <= 90.0 for d in offsets)
    assert min(offsets) < -60.0 and max(offsets) > 60.0  # both neighbours (0 and 180 = 0), the whole arc
    assert 0.4 < np.mean([d > 0 for d in offsets]) < 0.6


def test_texture_ambiguity_is_other_data():
    assert default_synthetic_root(SyntheticConfig(ambiguous_texture_fraction=0.1)) != default_synthetic_root(SyntheticConfig())
    with pytest.raises(ConfigError, match=r"data\.synthetic\.ambiguous_texture_fraction must be <= 1, got 2"):
        JobConfig.parse({"data": {"synthetic": {"ambiguous_texture_fraction": 2.0}}})


@pytest.mark.parametrize("noise, fix", [(-0.1, "must be >= 0, got -0.1"), (0.8, "must be <= 0.5, got 0.8")])
def test_pixel_noise_out_of_range_is_a_config_error(noise, fix):
    with pytest.raises(ConfigError, match=re.escape(f"data.synthetic.pixel_noise {fix}")):
        JobConfig.parse({"data": {"synthetic": {"pixel_noise": noise}}})


def test_default_synthetic_root(monkeypatch, tmp_path):
    monkeypatch.delenv("RESOLAB_HOME", raising=False)
    project = Path(__file__).resolve().parent.parent
    assert default_synthetic_root(SMALL).parent == project / ".resolab" / "data"
    monkeypatch.setenv("RESOLAB_HOME", str(tmp_path))
    root = default_synthetic_root(SMALL)
    assert root.parent == tmp_path / "data" and root.name.startswith("synthetic-")
    assert default_synthetic_root(SyntheticConfig(**{**vars(SMALL), "seed": 1})) != root
    assert default_synthetic_root(SMALL, num_classes=4) != root


# ----------------------------------------------------------------------------- dataset checks

def make_imagefolder(root: Path, splits=("train", "val"), classes=("cat", "dog"), per_class=3) -> Path:
    img = smooth_asymmetric_image(40, 30)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                img.save(root / split / c / f"{i}.png")
    return root


def test_missing_root_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as info:
        resolve_data_root(DataConfig(dataset="imagefolder", root=str(missing)))
    message = str(info.value)
    assert str(missing) in message and "train/<class>/*.jpg" in message and "data.dataset=synthetic" in message


def test_missing_val_is_a_clear_error(tmp_path):
    root = make_imagefolder(tmp_path / "d", splits=("train",))
    with pytest.raises(DatasetError, match=re.escape(str(root / "val"))):
        build_val_dataset(DataConfig(dataset="imagefolder", root=str(root)), [32])


def test_class_mismatch_is_named(tmp_path):
    root = make_imagefolder(tmp_path / "d")
    (root / "val" / "dog").rename(root / "val" / "doge")
    with pytest.raises(DatasetError, match=r"only in train: \['dog'\]; only in val: \['doge'\]"):
        build_train_dataset(DataConfig(dataset="imagefolder", root=str(root)), [32])


def test_num_classes_mismatch(tmp_path):
    root = make_imagefolder(tmp_path / "d")
    with pytest.raises(DatasetError, match="data.num_classes=5"):
        resolve_data_root(DataConfig(dataset="imagefolder", root=str(root), num_classes=5))


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_names_the_file(tmp_path, workers):
    root = make_imagefolder(tmp_path / "d")
    bad = root / "train" / "dog" / "bad.png"
    bad.write_bytes(b"\x89PNG not really" + bytes(range(200)))
    dataset = build_train_dataset(DataConfig(dataset="imagefolder", root=str(root)), [16])
    loader = build_loader(dataset, 8, shuffle=False, seed=0, workers=workers, drop_last=False)
    with pytest.raises(CorruptImageError, match=re.escape(str(bad)) + ".*remove or replace"):
        list(loader)


# ----------------------------------------------------------------------------- datasets and loaders

def test_datasets_from_synthetic_root(synthetic_root):
    data = synthetic_data(synthetic_root, resolutions=[48, 32])
    train, val = build_train_dataset(data), build_val_dataset(data, [56, 40, 24])
    assert train.num_classes == val.num_classes == 10 and train.classes == val.classes
    (images, label) = train[0]
    assert [tuple(x.shape) for x in images] == [(3, 48, 48), (3, 32, 32)] and label == 0
    assert [tuple(x.shape) for x in val[0][0]] == [(3, 56, 56), (3, 40, 40), (3, 24, 24)]


def test_limits_take_class_balanced_subsets(synthetic_root):
    data = synthetic_data(synthetic_root, limit_train=20, limit_val=10)
    train, val = build_train_dataset(data, [16]), build_val_dataset(data, [16])
    assert len(train) == 20 and len(val) == 10
    train_labels = [train.dataset.targets[i] for i in train.indices]
    assert sorted(set(train_labels)) == list(range(10)) and np.bincount(train_labels).max() <= 3
    assert sorted({val.dataset.targets[i] for i in val.indices}) == list(range(10))
    assert train.indices == build_train_dataset(data, [16]).indices  # deterministic
    assert len(build_train_dataset(synthetic_data(synthetic_root, limit_train=10_000), [16])) == SMALL.num_train


def test_loader_batches_hold_every_resolution(synthetic_root):
    dataset = build_train_dataset(synthetic_data(synthetic_root, resolutions=[40, 32, 24]))
    images, labels = next(iter(build_loader(dataset, 6, shuffle=True, seed=0, workers=0, drop_last=True)))
    assert isinstance(images, tuple) and [tuple(x.shape) for x in images] == [(6, 3, r, r) for r in (40, 32, 24)]
    assert labels.shape == (6,) and labels.dtype == torch.int64


def test_distributed_split_is_disjoint_and_reshuffled(synthetic_root):
    dataset = build_train_dataset(synthetic_data(synthetic_root), [16])  # 100 images
    loaders = [build_loader(dataset, 10, shuffle=True, seed=7, workers=0, drop_last=False, rank=r, world_size=2)
               for r in range(2)]
    shares = [list(loader.sampler) for loader in loaders]
    assert len(shares[0]) == len(shares[1]) == 50
    assert not set(shares[0]) & set(shares[1]) and set(shares[0]) | set(shares[1]) == set(range(100))
    set_epoch(loaders[0], 1)
    assert list(loaders[0].sampler) != shares[0]
    set_epoch(loaders[0], 0)
    assert list(loaders[0].sampler) == shares[0]


def first_batch(loader):
    images, labels = next(iter(loader))
    return torch.cat([x.flatten(1) for x in images], 1), labels


def test_same_seed_same_first_batch_with_workers(synthetic_root):
    dataset = build_train_dataset(synthetic_data(synthetic_root, resolutions=[32, 16]))
    batches = []
    for seed, global_seed in ((0, 1), (0, 2), (1, 1)):
        torch.manual_seed(global_seed)  # must not matter: workers are seeded from the loader's seed
        batches.append(first_batch(build_loader(dataset, 8, shuffle=True, seed=seed, workers=2, drop_last=True)))
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])
    assert not torch.equal(batches[0][0], batches[2][0])


def test_same_seed_same_first_batch_in_process(synthetic_root):
    dataset = build_train_dataset(synthetic_data(synthetic_root, resolutions=[32, 16]))
    batches = []
    for seed in (0, 0):
        torch.manual_seed(123)  # workers=0: crops come from the global RNG, which the loop seeds
        batches.append(first_batch(build_loader(dataset, 8, shuffle=True, seed=seed, workers=0, drop_last=True)))
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])


def test_set_epoch_reshuffles_reproducibly(synthetic_root):
    dataset = build_val_dataset(synthetic_data(synthetic_root), [16])  # deterministic transform
    loader = build_loader(dataset, 30, shuffle=True, seed=0, workers=0, drop_last=False)
    orders = {}
    for epoch in (0, 1, 0):
        set_epoch(loader, epoch)
        orders.setdefault(epoch, []).append(next(iter(loader))[1])
    assert torch.equal(orders[0][0], orders[0][1]) and not torch.equal(orders[0][0], orders[1][0])


def test_calibration_loader(synthetic_root):
    data = synthetic_data(synthetic_root, resolutions=[48, 32])
    loader = build_calibration_loader(build_calibration_images(data), 40, data.crop, batch_size=5, seed=0)
    images, labels = next(iter(loader))
    assert len(images) == 1 and images[0].shape == (5, 3, 40, 40) and labels.shape == (5,)


def test_resolve_synthetic_writes_on_demand(tmp_path):
    root = tmp_path / "syn"
    data = DataConfig(dataset="synthetic", root=str(root), num_classes=4,
                      synthetic=SyntheticConfig(num_train=8, num_val=4, min_size=32, max_size=40))
    assert resolve_data_root(data) == root
    assert len(list((root / "train").iterdir())) == 4 and (root / MARKER).exists()
