"""The typed shape of one job's configuration.

A job is everything needed to train and evaluate one model: which backbone, which method and its
ablation switches, which data at which resolutions, how to optimise, how to evaluate, and what
resources to run on. Experiment YAML files (``experiments/*.yaml``) are parsed into these classes by
``orchestrator.config``; every field here is a key a user may write, nothing else is accepted.

Values are checked in ``JobConfig.validate``; the field names and defaults are the documentation.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

BACKBONES = ("resnet18", "resnet50", "mobilenet_v2", "resnet_tiny")
METHODS = ("individual", "parallel", "rsnet", "san")
BN_CHOICES = ("private", "shared")
DISTILL_CHOICES = ("none", "vanilla", "full", "from_largest", "from_models")
SAN_CONV_CHOICES = ("meta", "private")
CROP_CHOICES = ("single", "multi")
DATASETS = ("synthetic", "imagefolder")
PRECISIONS = ("fp32", "bf16", "fp16")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the fix."""


@dataclass
class ModelConfig:
    backbone: str = "resnet_tiny"
    # 3x3 stride-1 stem and no max-pool, for 16-64 px data; ImageNet stem otherwise.
    small_input: bool = False
    width: int = 16  # channels of the first stage; resnet_tiny only


@dataclass
class MethodConfig:
    name: str = "rsnet"
    bn: str = "private"  # parallel, rsnet, san: private BN per training resolution, or one shared BN
    distill: str = "full"  # rsnet only: MRED distillation variant (RS-Nets Table 5)
    scale_distill: bool = True  # san only: scale distillation (SAN Table 3 "w/o SD" = false)
    meta_hidden: int = 0  # san only: 0 = linear meta net b + eps*w; 8 or 16 = MLP with ReLU (Table 5)
    convs: str = "meta"  # san only: meta-generated convs, or one private conv per resolution (Table 4)


@dataclass
class SyntheticConfig:
    num_train: int = 2000
    num_val: int = 500
    min_size: int = 64
    max_size: int = 128
    seed: int = 0


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    # ImageFolder root with train/ and val/ (ImageNet layout); for synthetic, where it is written
    # (default: <project>/.resolab/data/synthetic-<hash of the synthetic settings>).
    root: str | None = None
    num_classes: int | None = None  # None: taken from the dataset
    resolutions: list[int] = field(default_factory=lambda: [224, 192, 160, 128, 96])  # large to small
    crop: str = "single"  # one RandomResizedCrop + flip for all resolutions, or one per resolution
    loader_workers: int = 2
    # Cap the number of images used (train, val); None = all. For smoke runs.
    limit_train: int | None = None
    limit_val: int | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class TrainConfig:
    epochs: int = 120
    batch_size: int = 256  # per job (split across workers)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: int = 0
    seed: int = 0
    max_steps_per_epoch: int | None = None  # None: a full pass over the training set
    precision: str = "fp32"  # autocast dtype on GPU
    channels_last: bool = False
    # A loss above this (or NaN/inf) fails the job with a clear reason.
    divergence_threshold: float = 1e4


@dataclass
class EvalConfig:
    # None: SAN Table 1's list scaled by max(train resolutions) / 224.
    test_resolutions: list[int] | None = None
    calib_batches: int = 8  # SAN ideal + BN recalibration: training batches at the test resolution
    calibrate: bool = True  # also evaluate SAN "ideal + calibrated BN" (costs calib_batches per cell)
    max_batches: int | None = None  # cap validation batches (smoke runs)
    batch_size: int = 256


@dataclass
class ResourcesConfig:
    workers: int = 1  # Ray Train workers (DDP ranks) for this job
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # fractional values share one GPU between small jobs
    max_failures: int = 2  # worker-group restarts from the last checkpoint


@dataclass
class JobConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    # Free-form label for grouping in tables (e.g. "table5/vanilla"); not part of the model.
    tag: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def test_resolutions(self) -> list[int]:
        """The evaluation columns: configured, or SAN Table 1's list scaled to the training range."""
        if self.eval.test_resolutions:
            return list(self.eval.test_resolutions)
        san_table1 = (256, 224, 208, 192, 176, 160, 144, 128, 112, 96, 64)
        scale = max(self.data.resolutions) / 224
        return sorted({max(8, round(t * scale)) for t in san_table1}, reverse=True)

    def validate(self) -> "JobConfig":
        """Check values that a type alone cannot; raise ConfigError naming the key and the fix."""
        def choice(key, value, choices):
            if value not in choices:
                raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")

        choice("model.backbone", self.model.backbone, BACKBONES)
        choice("method.name", self.method.name, METHODS)
        choice("method.bn", self.method.bn, BN_CHOICES)
        choice("method.distill", self.method.distill, DISTILL_CHOICES)
        choice("method.convs", self.method.convs, SAN_CONV_CHOICES)
        choice("data.crop", self.data.crop, CROP_CHOICES)
        choice("data.dataset", self.data.dataset, DATASETS)
        choice("train.precision", self.train.precision, PRECISIONS)
        res = self.data.resolutions
        if not res:
            raise ConfigError("data.resolutions is empty: give at least one training resolution, e.g. [64, 48, 32]")
        if any((not isinstance(r, int)) or isinstance(r, bool) or r <= 0 for r in res):
            raise ConfigError(f"data.resolutions must be positive integers, got {res}")
        if list(res) != sorted(res, reverse=True):
            raise ConfigError(f"data.resolutions must be listed large to small, got {res}; write {sorted(res, reverse=True)}")
        if self.method.name == "individual" and len(res) != 1:
            raise ConfigError(
                f"method.name=individual trains one resolution per job, got data.resolutions={res}; "
                "a suite expands an I-Net set into one job per resolution (orchestrator.config.expand_jobs)")
        if self.eval.test_resolutions is not None and (
                not self.eval.test_resolutions or any(r <= 0 for r in self.eval.test_resolutions)):
            raise ConfigError(f"eval.test_resolutions must be a non-empty list of positive integers, got {self.eval.test_resolutions}")
        if self.method.meta_hidden < 0:
            raise ConfigError(f"method.meta_hidden must be 0 (linear) or a positive number of hidden units, got {self.method.meta_hidden}")
        if self.data.dataset == "imagefolder" and not self.data.root:
            raise ConfigError("data.dataset=imagefolder needs data.root: a folder holding train/<class>/ and val/<class>/")
        positive = {
            "train.epochs": self.train.epochs, "train.batch_size": self.train.batch_size,
            "eval.batch_size": self.eval.batch_size, "resources.workers": self.resources.workers,
            "data.synthetic.num_train": self.data.synthetic.num_train,
            "data.synthetic.num_val": self.data.synthetic.num_val,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}")
        if self.train.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.train.lr}")
        if self.resources.cpus_per_worker < 0 or self.resources.gpus_per_worker < 0:
            raise ConfigError("resources.cpus_per_worker and resources.gpus_per_worker must be >= 0")
        if self.resources.gpus_per_worker > 1 and self.resources.gpus_per_worker != int(self.resources.gpus_per_worker):
            raise ConfigError("resources.gpus_per_worker above 1 must be a whole number")
        if self.data.synthetic.min_size > self.data.synthetic.max_size:
            raise ConfigError("data.synthetic.min_size must be <= data.synthetic.max_size")
        return self
