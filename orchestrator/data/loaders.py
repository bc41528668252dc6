"""Datasets, multi-resolution transforms and loaders.

A training sample is one image seen at every training resolution: a tuple of tensors, one per
resolution, from ONE RandomResizedCrop box and ONE flip decision resized to each size (RS-Nets §3.1);
``crop="multi"`` draws them independently (RS-Nets Table 6). A
validation sample is the image at every test resolution: shorter side resized to S / 0.875, centre
crop S. Samples stay uint8 all the way to the device: ``backbones.preprocess.normalize_on_device``
converts and normalises them there, once per batch (unlike the papers' reference code, with the
ImageNet mean/std). On the CPU that was most of a multi-resolution sample's cost, and uint8 moves 4x
fewer bytes to the device than float32.

Training resize order: the crop box is resized from the decoded image to every size (antialiased
bilinear on uint8). ``bench/loader.py`` also measures the chained order (crop -> largest, then each
size from the previous one): at one thread it was not faster (91.5 against 96.1 img/s) and moved
pixels by ~1.3 grey levels on average, so the direct order stays and the pixels are exactly those of
before. The validation transform resizes every test size from the decoded image, as before.

Batches are ``(tuple of S uint8 tensors [B, 3, r, r], labels [B])``.

Reproducibility: the shuffle order and the worker seeds come from a generator seeded by (seed, rank,
epoch) (see ``set_epoch``), and DataLoader workers seed their torch RNG from it, so two runs with the
same seed see the same crops. With ``workers=0`` the crops come from the main process's global torch
RNG instead, which the training loop seeds with ``torch.manual_seed``.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from backbones.preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 (re-exported)
from jobspec import DataConfig
from orchestrator.data.synthetic import default_synthetic_root, write_synthetic_imagefolder

CROP_SCALE = tuple(DataConfig.model_fields["crop_scale"].default)  # the papers' (0.08, 1)
CROP_RATIO = (3 / 4, 4 / 3)
EVAL_CROP_FRACTION = 0.875  # resize the shorter side to S / 0.875, then centre crop S
BILINEAR = F.InterpolationMode.BILINEAR


class DatasetError(RuntimeError):
    """Data that cannot be used as configured; the message names the path and the fix."""


class CorruptImageError(DatasetError):
    """An image file that cannot be decoded."""


class MultiResolutionTrainTransform:
    """PIL image -> tuple of uint8 3 x r x r tensors, one per resolution, in the given order."""

    def __init__(self, resolutions: list[int], crop: str = "single", scale: tuple[float, float] = CROP_SCALE):
        if crop not in ("single", "multi"):
            raise ValueError(f"crop must be 'single' or 'multi', got {crop!r}")
        self.resolutions = list(resolutions)
        self.crop = crop
        self.scale = tuple(scale)

    def _draw(self, img: torch.Tensor) -> tuple[tuple[int, int, int, int], bool]:
        box = v2.RandomResizedCrop.get_params(img, list(self.scale), list(CROP_RATIO))
        return box, bool(torch.rand(1) < 0.5)

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, ...]:
        img = F.to_image(img)  # uint8: torchvision's fast resize path, ~2.5x faster than float
        if self.crop == "multi":
            return tuple(self._one_crop(img, [r])[r] for r in self.resolutions)
        views = self._one_crop(img, self.resolutions)
        return tuple(views[r] for r in self.resolutions)

    def _one_crop(self, img: torch.Tensor, sizes: list[int]) -> dict[int, torch.Tensor]:
        """One crop box and flip, resized from the decoded image to every size (as the papers' code).
        Chaining (crop -> largest, then each size from the previous one) measured slower at one thread
        in bench/loader.py (91.5 against 96.1 img/s) and differs by ~1.3 grey levels on average, so
        the direct order stays: faster, and the same pixels as before."""
        (top, left, h, w), flip = self._draw(img)
        out: dict[int, torch.Tensor] = {}
        for r in dict.fromkeys(sizes):
            x = F.resized_crop(img, top, left, h, w, [r, r], interpolation=BILINEAR, antialias=True)
            out[r] = F.horizontal_flip(x) if flip else x
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resolutions={self.resolutions}, crop={self.crop!r}, scale={self.scale})"


class MultiResolutionEvalTransform:
    """PIL image -> tuple of uint8 3 x S x S centre crops, one per test resolution S."""

    def __init__(self, resolutions: list[int]):
        self.resolutions = list(resolutions)

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, ...]:
        img = F.to_image(img)
        outputs = []
        for s in self.resolutions:  # each from the decoded image: the evaluation numerics stay as they were
            x = F.resize(img, round(s / EVAL_CROP_FRACTION), interpolation=BILINEAR, antialias=True)
            outputs.append(F.center_crop(x, [s, s]))
        return tuple(outputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resolutions={self.resolutions})"


def load_rgb(path: str) -> Image.Image:
    """ImageFolder's loader, but a file that cannot be decoded fails loudly with its path."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # PIL's ways of saying "not a valid image"
        raise CorruptImageError(
            f"cannot decode image file {path} ({type(e).__name__}: {e}); remove or replace this file") from e


# ---------------------------------------------------------------------------------------------
# Locating and checking the data


def _layout_error(problem: str, root: Path) -> DatasetError:
    return DatasetError(
        f"{problem}. Expected an ImageFolder in ImageNet layout:\n"
        f"  {root}/train/<class>/*.jpg\n  {root}/val/<class>/*.jpg\n"
        "Fix: set data.root to a folder with that layout, or use data.dataset=synthetic "
        "for the built-in dataset that needs no download.")


def check_imagefolder_layout(root: Path) -> list[str]:
    """Return the class names after checking that train/ and val/ exist and hold the same classes."""
    if not root.is_dir():
        raise _layout_error(f"dataset root not found: {root}", root)
    classes = {}
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise _layout_error(f"missing split folder: {split_dir}", root)
        try:
            classes[split], _ = find_classes(str(split_dir))
        except FileNotFoundError:
            raise _layout_error(f"no class folders in {split_dir}", root) from None
    if classes["train"] != classes["val"]:
        only_train = sorted(set(classes["train"]) - set(classes["val"]))
        only_val = sorted(set(classes["val"]) - set(classes["train"]))
        raise DatasetError(
            f"{root}/train and {root}/val hold different classes (only in train: {only_train}; "
            f"only in val: {only_val}); labels would not match. Make both hold the same class folders.")
    return classes["train"]


def _imagefolder_root(data: DataConfig) -> Path:
    if not data.root:
        raise _layout_error("data.dataset=imagefolder but data.root is not set", Path("ROOT"))
    return Path(data.root).expanduser()


def _check_num_classes(data: DataConfig, root: Path, classes: list[str]) -> None:
    if data.num_classes is not None and data.num_classes != len(classes):
        raise DatasetError(
            f"data.num_classes={data.num_classes} but {root}/train holds {len(classes)} classes; "
            "set data.num_classes to that number or leave it unset (null) to take it from the data")


def resolve_data_root(data: DataConfig) -> Path:
    """The ImageFolder root to read; the synthetic dataset is written on first use."""
    if data.dataset == "synthetic":
        num_classes = data.num_classes or 10
        root = Path(data.root) if data.root else default_synthetic_root(data.synthetic, num_classes)
        try:
            write_synthetic_imagefolder(root, data.synthetic, num_classes)
        except (FileExistsError, ValueError) as e:
            raise DatasetError(str(e)) from e
    elif data.dataset == "imagefolder":
        root = _imagefolder_root(data)
    else:
        raise DatasetError(f"data.dataset={data.dataset!r} is not one of synthetic, imagefolder")
    _check_num_classes(data, root, check_imagefolder_layout(root))
    return root


def _holds_image(folder: str) -> bool:
    """Whether ImageFolder would find an image under ``folder`` (it searches subfolders too); reads
    only as far as the first image, so it stays cheap for ImageNet's 1300 files per class."""
    subfolders = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                subfolders.append(entry.path)
            elif entry.name.lower().endswith(IMG_EXTENSIONS):
                return True
    return any(_holds_image(sub) for sub in subfolders)


def _check_class_folders_hold_images(root: Path, classes: list[str]) -> None:
    """ImageFolder refuses a class folder without any image file, but only once a job lists it."""
    for split in ("train", "val"):
        for name in classes:
            if not _holds_image(str(root / split / name)):
                raise _layout_error(f"class folder {root / split / name} holds no image file "
                                    f"({', '.join(IMG_EXTENSIONS)})", root)


def check_suite_data(jobs) -> dict[Path, list[str]]:
    """Check each distinct ImageFolder root of ``jobs`` once, in the suite driver before anything starts
    (layout, class folders, data.num_classes), so that a wrong data.root fails in seconds with its fix
    instead of failing every job on Ray. The synthetic dataset is written by the jobs and needs no check.
    Returns root -> class names. (On a cluster the driver must see the data where the jobs will.)"""
    classes_of: dict[Path, list[str]] = {}
    for job in jobs:
        data = job.config.data
        if data.dataset != "imagefolder":
            continue
        root = _imagefolder_root(data)
        if root not in classes_of:
            classes_of[root] = check_imagefolder_layout(root)
            _check_class_folders_hold_images(root, classes_of[root])
        _check_num_classes(data, root, classes_of[root])
    return classes_of


def _image_folder(split_dir: Path, transform) -> ImageFolder:
    try:
        return ImageFolder(str(split_dir), transform=transform, loader=load_rgb)
    except FileNotFoundError as e:  # e.g. a class folder without any image file
        raise DatasetError(f"{split_dir}: {e}") from e


def _limited(folder: ImageFolder, limit: int | None, key: str) -> Dataset:
    """At most ``limit`` evenly spaced images: ImageFolder lists images class by class, so an even
    stride keeps the class proportions. Adds ``classes`` and ``num_classes`` attributes."""
    if limit is not None and limit <= 0:
        raise DatasetError(f"{key} must be a positive number of images or null (all), got {limit}")
    n = len(folder)
    dataset = folder if limit is None or limit >= n else Subset(folder, [i * n // limit for i in range(limit)])
    dataset.classes = folder.classes
    dataset.num_classes = len(folder.classes)
    return dataset


def build_train_dataset(data: DataConfig, resolutions: list[int] | None = None) -> Dataset:
    """Training images, each a tuple over ``resolutions`` (default data.resolutions), and a label."""
    root = resolve_data_root(data)
    transform = MultiResolutionTrainTransform(data.resolutions if resolutions is None else resolutions, data.crop,
                                              data.crop_scale)
    return _limited(_image_folder(root / "train", transform), data.limit_train, "data.limit_train")


def build_val_dataset(data: DataConfig, test_resolutions: list[int], preprocessing: str = "test") -> Dataset:
    """Validation images, each a tuple over ``test_resolutions``, and a label. ``preprocessing="train"``
    gives them the training transform instead (one random crop and flip, RS-Nets Fig. 3 right)."""
    root = resolve_data_root(data)
    if preprocessing not in ("test", "train"):
        raise ValueError(f"preprocessing must be 'test' or 'train', got {preprocessing!r}")
    transform = (MultiResolutionEvalTransform(test_resolutions) if preprocessing == "test"
                 else MultiResolutionTrainTransform(test_resolutions, "single", data.crop_scale))
    return _limited(_image_folder(root / "val", transform), data.limit_val, "data.limit_val")


# ---------------------------------------------------------------------------------------------
# Loaders


def collate_multires(batch):
    """[(tuple of S images, label)] -> (tuple of S [B, 3, r, r] tensors, [B] labels)."""
    images, labels = zip(*batch)
    return tuple(torch.stack(per_res) for per_res in zip(*images)), torch.tensor(labels)


def _stream_seed(seed: int, rank: int, epoch: int) -> int:
    """Independent, reproducible random streams for each (seed, rank, epoch)."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def _seed_worker(worker_id: int) -> None:
    # torch already seeded this worker from the loader's generator; give numpy and random the same
    # seed so that any augmentation written with them is reproducible too.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, workers: int,
                 drop_last: bool, rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader over ``dataset``; with world_size > 1 this rank's share via DistributedSampler.

    Call ``set_epoch(loader, epoch)`` before each epoch: a new shuffle per epoch that depends only on
    (seed, rank, epoch), so a run resumed at epoch e sees the same order as one that never stopped.
    (Persistent workers keep their augmentation RNG across epochs; only the order is re-seeded.)
    """
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                     seed=seed, drop_last=drop_last)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers, collate_fn=collate_multires, drop_last=drop_last,
        generator=torch.Generator().manual_seed(_stream_seed(seed, rank, 0)),
        worker_init_fn=_seed_worker, persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available())
    loader.seed, loader.rank = seed, rank
    return loader


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Select epoch ``epoch``'s shuffle (DistributedSampler or the loader's own generator)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    loader.generator.manual_seed(_stream_seed(loader.seed, loader.rank, epoch))


class _Transformed(Dataset):
    """(image, label) samples of ``base`` through ``transform``."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return self.transform(image), label


def build_calibration_images(data: DataConfig) -> Dataset:
    """The training images, undecorated: listed once, then seen at each calibration resolution (listing
    ImageNet's train folder takes long enough that it should not be repeated per resolution)."""
    return _limited(_image_folder(resolve_data_root(data) / "train", None), data.limit_train, "data.limit_train")


def build_calibration_loader(images: Dataset, resolution: int, crop: str, batch_size: int, seed: int,
                             workers: int = 0, scale: tuple[float, float] = CROP_SCALE) -> DataLoader:
    """Shuffled training images at one resolution (training transform), for BN recalibration."""
    dataset = _Transformed(images, MultiResolutionTrainTransform([resolution], crop, scale))
    return build_loader(dataset, batch_size, shuffle=True, seed=seed, workers=workers, drop_last=False)
