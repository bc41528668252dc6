"""The typed shape of one job's configuration: every key a user may write, nothing else.

A job is everything needed to train and evaluate one model: which backbone, which method and its
ablation switches, which data at which resolutions, how to optimise, how to evaluate, and what
resources to run on. The ``model:`` section and the backbone choices come from
``backbones.catalog``; the ``method:`` section is derived from ``methods.catalog`` (the name, and
every switch some method declares). Types, choices and bounds are checked by pydantic on
construction; ``JobConfig.validate`` re-checks them (configs are mutable) and adds the rules that
span sections.
"""
from __future__ import annotations

import functools
import re
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model, model_validator

from backbones.catalog import BACKBONES, FULL_PRECISION, ModelConfig, act_quant_backbones, split_external
from methods.catalog import METHODS

from .errors import ConfigError, message_from, show


def _integral_float_to_int(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# PyYAML follows YAML 1.1, where "1e-4" (no dot) is a string; YAML 1.2 and every user read it as a
# number, so float fields accept exactly that spelling.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$")


def _exponent_string_to_float(value):
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
        return float(value)
    return value


# Strict types (true is not an int, "5" is not a number), with two lossless exceptions: 2.0 for an int
# and "1e-4" for a float. Ints given for a float become floats, so 1 and 1.0 hash the same.
Int = Annotated[int, BeforeValidator(_integral_float_to_int)]
Float = Annotated[float, BeforeValidator(_exponent_string_to_float)]
PositiveInt = Annotated[Int, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_subsections(cls, data):
        """An empty section ("train:" with nothing under it) is all defaults."""
        if isinstance(data, dict):
            return {k: {} if v is None and _is_section(cls, k) else v for k, v in data.items()}
        return data


def _is_section(cls: type[BaseModel], name: str) -> bool:
    field = cls.model_fields.get(name)
    return field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def _method_section() -> type[Section]:
    """``method.name`` plus every switch of every method, each declared once with one type and default."""
    fields: dict[str, tuple] = {"name": (Literal[tuple(METHODS)], "rsnet")}
    owners: dict[str, str] = {}
    for method, entry in METHODS.items():
        for key, info in entry.options.model_fields.items():
            declared = (info.annotation, info.default, info.metadata)
            if key in owners:
                first = METHODS[owners[key]].options.model_fields[key]
                if (first.annotation, first.default, first.metadata) != declared:
                    raise TypeError(f"methods {owners[key]} and {method} declare option {key!r} differently")
                continue
            owners[key] = method
            fields[key] = (info.annotation, info)
    return create_model("MethodConfig", __base__=Section, **fields)


MethodConfig = _method_section()


class SyntheticConfig(Section):
    num_train: PositiveInt = 2000
    num_val: PositiveInt = 500
    min_size: Int = 64
    max_size: Int = 128
    seed: Int = 0
    # Share of objects whose colour lies anywhere between their family's and a neighbouring family's:
    # ambiguous at every resolution, so top-1 tops out near 1 - ambiguous_fraction / 2 (headroom).
    # Drawn only when > 0, so the images of 0 stay as they were.
    ambiguous_fraction: Annotated[Float, Field(ge=0, le=1)] = 0.0
    # Share of objects whose stripe orientation lies anywhere between their texture's and the other
    # texture's: ambiguous wherever the stripes decide (the high resolutions), the colour cue untouched.
    ambiguous_texture_fraction: Annotated[Float, Field(ge=0, le=1)] = 0.0
    # Grey pixel noise, uniform in [-pixel_noise, pixel_noise) on a 0-1 scale, drawn at the image's own
    # size: downsizing averages it away, so a small input is cleaner than a large one, as a camera's.
    pixel_noise: Annotated[Float, Field(ge=0, le=0.5)] = 0.05
    # Range of the stripe period, in units of the base period (1/12 of the image's shorter side), drawn
    # uniformly per image. Coarser stripes stay visible at lower resolutions: a range reaching above 1
    # grades the cue from the coarse images, readable small, to the fine ones, readable only large.
    stripe_period: list[Float] = [0.9, 1.1]


class DataConfig(Section):
    dataset: Literal["synthetic", "imagefolder"] = "synthetic"
    # ImageFolder root with train/ and val/ (ImageNet layout); for synthetic, where it is written
    # (default: <project>/.resolab/data/synthetic-<hash of the synthetic settings>).
    root: str | None = None
    num_classes: Int | None = None  # None: taken from the dataset
    resolutions: list[Int] = [224, 192, 160, 128, 96]  # large to small
    crop: Literal["single", "multi"] = "single"  # one RandomResizedCrop + flip for all resolutions, or one each
    # RandomResizedCrop's range of crop area, as a fraction of the image: (0.08, 1) in both papers and
    # torchvision's references (timm's ``scale``). A narrower range zooms in less, so a net sees its
    # objects at fewer scales.
    crop_scale: list[Float] = [0.08, 1.0]
    loader_workers: Int = 2
    # Cap the number of images used (train, val); None = all. For smoke runs.
    limit_train: Int | None = None
    limit_val: Int | None = None
    synthetic: SyntheticConfig = SyntheticConfig()


class TrainConfig(Section):
    epochs: PositiveInt = 120
    batch_size: PositiveInt = 256  # per job (split across workers)
    lr: Annotated[Float, Field(gt=0)] = 0.1
    momentum: Float = 0.9
    weight_decay: Float = 1e-4
    warmup_epochs: Int = 0
    seed: Int = 0
    max_steps_per_epoch: Int | None = None  # None: a full pass over the training set
    # LR schedule after warm-up: half-cosine to zero (both papers), or divided by ``gamma`` at each
    # epoch in ``milestones`` (LQ-Nets' schedule for the quantized RS-Nets: 30 60 85 95 105 of 120).
    schedule: Literal["cosine", "step"] = "cosine"
    milestones: list[Int] = []
    gamma: Annotated[Float, Field(gt=0, le=1)] = 0.1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype on GPU
    channels_last: bool = False
    compile: bool = False  # torch.compile the backbone
    # How often (in steps) the NaN/divergence check (and its DDP all-reduce) syncs with the host.
    check_every: PositiveInt = 1
    # A loss above this (or NaN/inf) fails the job with a clear reason.
    divergence_threshold: Float = 1e4


class EvalConfig(Section):
    # None: SAN Table 1's list scaled by max(train resolutions) / 224.
    test_resolutions: list[Int] | None = None
    calib_batches: Int = 8  # SAN ideal + BN recalibration: training batches at the test resolution
    calibrate: bool = True  # also evaluate SAN "ideal + calibrated BN" (costs calib_batches per cell)
    max_batches: Int | None = None  # cap validation batches (smoke runs)
    batch_size: PositiveInt = 256
    # Also record the GAP activations' quantiles on the validation images under the training and the
    # test pre-processing, per training resolution (RS-Nets Fig. 3 right): one more pass per resolution.
    gap_cdf: bool = False


class ResourcesConfig(Section):
    workers: PositiveInt = 1  # Ray Train workers (DDP ranks) for this job
    cpus_per_worker: Annotated[Float, Field(ge=0)] = 1.0
    gpus_per_worker: Annotated[Float, Field(ge=0)] = 0.0  # fractional values share one GPU between small jobs
    max_failures: Int = 2  # worker-group restarts from the last checkpoint


class JobConfig(Section):
    model: ModelConfig = ModelConfig()
    method: MethodConfig = MethodConfig()  # type: ignore[valid-type]
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    resources: ResourcesConfig = ResourcesConfig()
    # Free-form label for grouping in tables (e.g. "table5/vanilla"); not part of the model.
    tag: str = ""

    @classmethod
    def parse(cls, tree: dict) -> "JobConfig":
        """A nested dict -> JobConfig; a ConfigError names the first bad key, its value and the fix."""
        _refuse_bools_for_numbers(tree, cls, "")
        _check_backbone_name(tree)
        try:
            return cls.model_validate(tree)
        except ValidationError as e:
            raise ConfigError(message_from(e, cls, tree, VALID_KEYS)) from None

    @classmethod
    def parse_saved(cls, tree: dict) -> tuple["JobConfig", list[str]]:
        """A config saved by an earlier version (a checkpoint's or a model file's): keys this schema no
        longer has are dropped, not refused, and returned as dotted names, so that an old model stays
        loadable; whatever is left is checked as ``parse`` checks it. The weights then have to fit."""
        dropped: list[str] = []
        tree = _known_keys(tree, cls, "", dropped)
        method = tree.get("method")
        if (isinstance(method, dict) and method.get("name") == "san" and method.get("convs", "meta") == "meta"
                and "meta_stem" not in method):
            # Saved before method.meta_stem existed: every conv was generated, the stem included.
            tree["method"] = {**method, "meta_stem": True}
        return cls.parse(tree), dropped

    def to_dict(self) -> dict:
        return self.model_dump()

    def test_resolutions(self) -> list[int]:
        """The evaluation columns: configured, or SAN Table 1's list scaled to the training range."""
        if self.eval.test_resolutions:
            return list(self.eval.test_resolutions)
        san_table1 = (256, 224, 208, 192, 176, 160, 144, 128, 112, 96, 64)
        scale = max(self.data.resolutions) / 224
        return sorted({max(8, round(t * scale)) for t in san_table1}, reverse=True)

    def validate(self) -> "JobConfig":
        """Every field's type, choice and bound again, then the rules across fields; ConfigError names the key."""
        JobConfig.parse(self.to_dict())
        return self.check_rules()

    def check_rules(self) -> "JobConfig":
        """The rules across fields alone, for a config fresh from ``parse`` (a 10,000-job suite parses once)."""
        res = self.data.resolutions
        if not res:
            raise ConfigError("data.resolutions is empty: give at least one training resolution, e.g. [64, 48, 32]")
        if any(r <= 0 for r in res):
            raise ConfigError(f"data.resolutions must be positive integers, got {res}")
        if list(res) != sorted(res, reverse=True):
            raise ConfigError(f"data.resolutions must be listed large to small, got {res}; write {sorted(res, reverse=True)}")
        if self.data.crop != "multi" and (repeated := repeated_resolutions(res)):
            raise ConfigError(repeated)
        if self.method.name == "individual" and len(res) != 1:
            raise ConfigError(
                f"method.name=individual trains one resolution per job, got data.resolutions={res}; "
                "a suite expands an I-Net set into one job per resolution")
        if self.eval.test_resolutions is not None and (
                not self.eval.test_resolutions or any(r <= 0 for r in self.eval.test_resolutions)):
            raise ConfigError(f"eval.test_resolutions must be a non-empty list of positive integers, got {self.eval.test_resolutions}")
        if self.data.dataset == "imagefolder" and not self.data.root:
            raise ConfigError("data.dataset=imagefolder needs data.root: a folder holding train/<class>/ and val/<class>/")
        if self.resources.gpus_per_worker > 1 and self.resources.gpus_per_worker != int(self.resources.gpus_per_worker):
            raise ConfigError("resources.gpus_per_worker above 1 must be a whole number")
        milestones = self.train.milestones
        if self.train.schedule == "step" and not milestones:
            raise ConfigError("train.schedule=step needs train.milestones: the epochs at which the lr is multiplied "
                              "by train.gamma, e.g. [30, 60, 85, 95, 105]")
        if self.train.schedule == "cosine" and milestones:
            raise ConfigError(f"train.milestones={milestones} is read only with train.schedule=step; "
                              "set train.schedule: step or drop train.milestones")
        if milestones and (milestones != sorted(set(milestones)) or milestones[0] <= 0):
            raise ConfigError(f"train.milestones must be increasing positive epochs, got {milestones}")
        # The lr is divided once that many epochs are done, so a milestone >= train.epochs never applies.
        # A run with capped epochs (train.max_steps_per_epoch: a smoke run, a test) is exempt: its
        # schedule is not the point, and a suite's real jobs are checked even when it runs --smoke.
        late = [m for m in milestones if m >= self.train.epochs]
        if late and self.train.max_steps_per_epoch is None:
            raise ConfigError(f"train.milestones {late} are not before train.epochs={self.train.epochs}: the lr is "
                              "divided after that many epochs, so they would never apply; drop them or scale the "
                              "milestones to the epochs")
        self._check_quantization()
        self._check_model_sources()
        if self.method.name == "san" and self.method.convs != "meta" and self.method.meta_stem is not None:
            raise ConfigError(f"method.meta_stem={str(self.method.meta_stem).lower()} is read only with method.convs=meta "
                              f"(with {self.method.convs} convs every conv, the stem included, is {self.method.convs}); "
                              "drop method.meta_stem or set method.convs: meta")
        scale = self.data.crop_scale
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"data.crop_scale must be [min, max] area fractions with 0 < min <= max <= 1, got {scale}; "
                              "the papers use [0.08, 1.0]")
        period = self.data.synthetic.stripe_period
        if len(period) != 2 or not 0.5 <= period[0] <= period[1] <= 4:
            raise ConfigError(f"data.synthetic.stripe_period must be [min, max] with 0.5 <= min <= max <= 4 "
                              f"(units of 1/12 of the image's shorter side), got {period}; the default is [0.9, 1.1]")
        if self.data.synthetic.min_size > self.data.synthetic.max_size:
            raise ConfigError("data.synthetic.min_size must be <= data.synthetic.max_size")
        return self


    def _check_quantization(self) -> None:
        """Quantized activations need a pre-activation backbone; quantizers need plain convs."""
        m = self.model
        supported = act_quant_backbones()
        if m.act_bits != FULL_PRECISION and m.backbone not in supported:
            twin = f"preact_{m.backbone}"
            fix = f"use model.backbone={twin}" if twin in supported else "pick one of them"
            raise ConfigError(f"model.act_bits={m.act_bits} quantizes activations, which only pre-activation backbones "
                              f"support ({', '.join(supported)}); model.backbone={m.backbone} is not one: {fix}, "
                              "or set model.act_bits: 32")
        quantized = m.weight_bits != FULL_PRECISION or m.act_bits != FULL_PRECISION
        if quantized and self.method.name == "san":
            raise ConfigError(f"model.weight_bits={m.weight_bits} / model.act_bits={m.act_bits}: quantization applies "
                              "to plain convs (individual, parallel, rsnet), not to SAN's generated ones; "
                              "set both to 32 or pick another method.name")


    def _check_model_sources(self) -> None:
        """A torchvision:/timm: model the surgery cannot serve (a norm layer other than BatchNorm, convs
        of its own that SAN or quantization would replace) and a missing model.init file are refused
        here, before any job starts."""
        m = self.model
        if split_external(m.backbone) is not None:
            from backbones.external import refusal  # loads torch and the library: only for such a name
            replaces_convs = self.method.name == "san" or m.weight_bits != FULL_PRECISION
            if problem := refusal(m.backbone, replaces_convs):
                raise ConfigError(f"model.backbone={m.backbone}: {problem}")
        if m.init is not None and not Path(m.init).expanduser().is_file():
            raise ConfigError(f"model.init={m.init}: no such file; give a plain {m.backbone} model's state dict, "
                              "saved with torch.save(model.state_dict(), PATH)")


def _check_backbone_name(tree) -> None:
    """model.backbone: a built-in name, or torchvision:<name> / timm:<name> that the library knows (close
    names of that library suggested otherwise). A value that is no string is left to pydantic."""
    model = tree.get("model") if isinstance(tree, dict) else None
    name = model.get("backbone") if isinstance(model, dict) else None
    if not isinstance(name, str) or name in BACKBONES:
        return
    if split_external(name) is None:
        raise ConfigError(f"model.backbone: expected one of {', '.join(BACKBONES)}, or torchvision:<name> or "
                          f"timm:<name> (any BatchNorm CNN of those libraries), got {show(name)}")
    from backbones.external import unknown_name  # loads torch and the library: only for such a name
    if problem := unknown_name(name):
        raise ConfigError(f"model.backbone={name}: {problem}")


def repeated_resolutions(resolutions) -> str | None:
    """The message for a resolution listed twice, or None. With one crop for all resolutions (data.crop:
    single, and ``resolab describe``) every copy sees the same image: the slots train identically, an
    I-Net with k times the gradient (RS-Nets Table 6, whose single-resolution single-crop column is the
    I-Nets). With data.crop: multi each copy gets its own crop, the paper's single-resolution multi-crop."""
    twice = sorted({r for r in resolutions if list(resolutions).count(r) > 1}, reverse=True)
    if not twice:
        return None
    return (f"data.resolutions={list(resolutions)} lists {', '.join(map(str, twice))} more than once: with one crop "
            "for all resolutions every copy sees the same image, so the copies train identically; list each "
            "resolution once, or set data.crop: multi for RS-Nets' single-resolution multi-crop model")


def _refuse_bools_for_numbers(tree, model: type[BaseModel], prefix: str) -> None:
    """true/false where a choice of numbers is expected (model.act_bits: true): Python's True == 1 passes
    a Literal of ints even in strict mode, and would be read as 1 bit."""
    if not isinstance(tree, dict):
        return
    fields = _number_choices(model)
    for key, value in tree.items():
        rule = fields.get(key) if isinstance(key, str) else None
        if rule is None:
            continue
        if not isinstance(rule, tuple):
            _refuse_bools_for_numbers(value, rule, f"{prefix}{key}.")
        elif isinstance(value, bool):
            raise ConfigError(f"{prefix}{key}: expected one of {', '.join(map(str, rule))}, got {show(value)} (bool)")


@functools.cache
def _number_choices(model: type[BaseModel]) -> dict[str, object]:
    """Field -> its section's model, or the choices of a Literal of ints; once per model, since every job
    of a suite is parsed (pydantic's ``model_fields`` is slow to read)."""
    rules: dict[str, object] = {}
    for key, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rules[key] = annotation
        elif typing.get_origin(annotation) is Literal and all(
                isinstance(c, int) and not isinstance(c, bool) for c in typing.get_args(annotation)):
            rules[key] = typing.get_args(annotation)
    return rules


def _keys(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield prefix + name
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _keys(field.annotation, f"{prefix}{name}.")


VALID_KEYS: tuple[str, ...] = tuple(_keys(JobConfig))  # every dotted key a user may write: sections and leaves

__all__ = ["BACKBONES", "METHODS", "ConfigError", "DataConfig", "EvalConfig", "JobConfig", "MethodConfig",
           "ModelConfig", "ResourcesConfig", "SyntheticConfig", "TrainConfig", "VALID_KEYS"]


def _known_keys(tree: dict, model: type[BaseModel], prefix: str, dropped: list[str]) -> dict:
    kept = {}
    for key, value in tree.items():
        field = model.model_fields.get(key)
        if field is None:
            dropped.append(prefix + key)
        elif isinstance(value, dict) and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            kept[key] = _known_keys(value, field.annotation, f"{prefix}{key}.", dropped)
        else:
            kept[key] = value
    return kept
