"""The papers' released checkpoints as resolab models (``resolab import-reference``).

Both reference codes (d-li14/SAN, yikaiw/RS-Nets, non-quantization) train one network per resolution
set with lists of tensors flowing through it. Their state dicts differ from ours in three ways:

- every shared module is wrapped: ``ModuleParallel(nn.Conv2d)`` saves ``<name>.module.weight``;
- private BN is a module holding one ``nn.BatchNorm2d`` per resolution, ``<name>.bn_<i>.*``; ours is one
  ``SwitchableBatchNorm2d`` whose tensors carry a leading slot dimension;
- SAN generates kernels with ``nn.Linear(1, numel)`` per conv (``<block>.fc<k>``): the kernel is
  ``bias + eps * weight``, so ``bias`` is our ``base`` and ``weight`` our ``scale`` (both reshaped to
  the kernel). Its ResNet stem is a plain conv (``conv1.module.weight``), as ours by default
  (``method.meta_stem``); its MobileNetV2 generates the stem too (``features.0.fc``), as ours does.

We name, for every module of our net, the module of the reference that holds its weights; the key
check then compares the two key sets in full. A key the reference has and we do not use is an error,
except SAN ResNets' ``downsample.*``: that reference builds torchvision's downsample branch and never
runs it (its blocks generate the shortcut from ``fc3``/``fc4`` with ``bn3``/``bn4``); those keys are
listed as unused, never silently dropped. RS-Nets' training script registers the MRED weights on the
model before wrapping it (``model.register_parameter('alpha', ...)``) and saves ``model.state_dict()``,
so its checkpoint holds ``module.alpha`` (S values, one per resolution): it becomes our RS-Net's
``mred.alpha``. A state dict without it (saved from the bare network) keeps α at its initial ones, and
the import says so; α only weighs the training loss and the ensemble, never one resolution's logits.

SAN's reference feeds slot i the scale 0.7 - 0.1 i whatever the resolution (its 224...96); ours feeds
resolution / 320. They agree only on that set, so a SAN import at other resolutions is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from backbones import MetaConv2d, SwitchableBatchNorm2d, scale_encoding
from jobspec import JobConfig
from orchestrator.deploy.model_file import ModelFileError, build_model, read_payload

PAPERS = ("san", "rsnets")
MRED_KEY = "alpha"  # RS-Nets' imagenet.py registers the MRED weights on the model under this name
BN_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
SUPPORTED = ("resnet18", "resnet50", "resnet_tiny", "mobilenet_v2")


class ImportMismatch(ModelFileError):
    """The checkpoint does not fit the net asked for."""


@dataclass
class Imported:
    config: JobConfig
    net: nn.Module
    num_classes: int
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------- reading the checkpoint


def reference_state(payload: dict) -> dict[str, torch.Tensor]:
    """A bare state dict or one under 'state_dict', without DataParallel's 'module.' prefix."""
    state = payload.get("state_dict", payload)
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError("the checkpoint holds no state dict (neither a bare one nor one under 'state_dict')")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# ----------------------------------------------------------------- where each of our modules lives there


def _blocks(backbone: nn.Module) -> dict[str, nn.Module]:
    """Our residual / inverted-residual blocks by path: the units inside which the reference numbers its
    convs and BNs (SAN: fc1, bn1, fc2, ...)."""
    from torchvision.models.mobilenetv2 import InvertedResidual
    from torchvision.models.resnet import BasicBlock, Bottleneck
    return {name: m for name, m in backbone.named_modules() if isinstance(m, (BasicBlock, Bottleneck, InvertedResidual))}


def _convs_and_bns(module: nn.Module, prefix: str) -> tuple[list[str], list[str]]:
    convs, bns = [], []
    for name, m in module.named_modules():
        path = f"{prefix}.{name}" if name else prefix
        if isinstance(m, (nn.Conv2d, MetaConv2d)):
            convs.append(path)
        elif isinstance(m, nn.BatchNorm2d):
            bns.append(path)
    return convs, bns


def reference_names(paper: str, backbone_name: str, backbone: nn.Module) -> dict[str, str]:
    """Our module path -> the reference module path that holds its weights (before '.module' / '.bn_i')."""
    names: dict[str, str] = {}
    blocks = _blocks(backbone)
    mobilenet = backbone_name == "mobilenet_v2"
    for block_path, block in blocks.items():
        convs, bns = _convs_and_bns(block, block_path)
        for k, (conv, bn) in enumerate(zip(convs, bns)):
            if paper == "san":
                names[conv], names[bn] = f"{block_path}.fc{k + 1}", f"{block_path}.bn{k + 1}"
            elif mobilenet:  # tonylins' Sequential: conv, BN, ReLU6 per step
                names[conv], names[bn] = f"{block_path}.conv.{3 * k}", f"{block_path}.conv.{3 * k + 1}"
            else:  # torchvision's ResNet names
                names[conv], names[bn] = conv, bn
    last = len(backbone.features) - 1 if mobilenet else None
    for path, m in backbone.named_modules():
        if path in names or not isinstance(m, (nn.Conv2d, MetaConv2d, nn.BatchNorm2d, nn.Linear)):
            continue
        if mobilenet:
            # features.0 = stem conv+BN, features.<last> = the 1x1 conv+BN that the reference calls `conv`.
            stage, _, index = path.rpartition(".")
            ref_stage = "conv" if stage == f"features.{last}" else stage
            if isinstance(m, nn.Linear):
                names[path] = "classifier"
            elif paper == "san":
                names[path] = f"{ref_stage}.{'bn' if isinstance(m, nn.BatchNorm2d) else 'fc'}"
            else:
                names[path] = f"{ref_stage}.{index}"
        else:
            names[path] = path  # ResNet stem conv1/bn1 and fc keep their names in both references
    return names


# ----------------------------------------------------------------- the expected reference keys


def expected_keys(paper: str, backbone_name: str, net: nn.Module) -> dict[str, tuple[tuple[int, ...], object]]:
    """Reference key -> (shape, setter) for every tensor our net takes from a reference checkpoint."""
    backbone = net.backbone
    names = reference_names(paper, backbone_name, backbone)
    modules = dict(backbone.named_modules())
    expected: dict[str, tuple[tuple[int, ...], object]] = {}

    def put(key, shape, setter):
        expected[key] = (tuple(shape), setter)

    for path, ref in names.items():
        m = modules[path]
        if isinstance(m, SwitchableBatchNorm2d):
            for i in range(m.num_slots):
                for leaf in BN_LEAVES:
                    target = getattr(m, leaf)
                    shape = () if leaf == "num_batches_tracked" else target.shape[1:]
                    put(f"{ref}.bn_{i}.{leaf}", shape, lambda v, t=target, i=i: t.data[i].copy_(v))
        elif isinstance(m, nn.BatchNorm2d):
            raise ImportMismatch(f"{path} is a shared BN; the papers' checkpoints have private BN (method.bn=private)")
        elif isinstance(m, MetaConv2d):
            if not ref.rpartition(".")[2].startswith("fc"):  # the reference's ResNet stem is plain
                raise ImportMismatch(f"{path} is generated where the reference has a plain conv ({ref}); "
                                     "build the SAN with method.meta_stem left to the reference's choice")
            numel = int(torch.Size(m.weight_shape).numel())  # a meta net nn.Linear(1, numel)
            put(f"{ref}.bias", (numel,), lambda v, m=m: m.base.data.copy_(v.view(m.weight_shape)))
            put(f"{ref}.weight", (numel, 1), lambda v, m=m: m.scale.data.copy_(v.view(m.weight_shape)))
            if m.bias is not None:
                raise ImportMismatch(f"{path}: a conv with a bias has no counterpart in the reference code")
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            put(f"{ref}.module.weight", m.weight.shape, lambda v, m=m: m.weight.data.copy_(v))
            if m.bias is not None:
                put(f"{ref}.module.bias", m.bias.shape, lambda v, m=m: m.bias.data.copy_(v))
    return expected


def _unused_by_reference(paper: str, key: str) -> bool:
    """SAN ResNets build torchvision's downsample branch and never run it (see the module docstring)."""
    return paper == "san" and ".downsample." in f".{key}"


# ----------------------------------------------------------------- import


def reference_config(paper: str, backbone: str, resolutions: list[int], num_classes: int,
                     small_input: bool = False, width: int | None = None) -> JobConfig:
    model = {"backbone": backbone, "small_input": small_input}
    if width is not None:
        model["width"] = width
    method = {"name": "san", "convs": "meta", "meta_hidden": 0} if paper == "san" else {"name": "rsnet"}
    return JobConfig.parse({"model": model, "method": method,
                            "data": {"resolutions": list(resolutions), "num_classes": num_classes}})


def _check_san_scales(resolutions: list[int]) -> None:
    reference = [round(0.7 - 0.1 * i, 6) for i in range(len(resolutions))]
    ours = [round(scale_encoding(r), 6) for r in resolutions]
    if reference != ours:
        fitting = [224, 192, 160, 128, 96][:len(resolutions)]
        raise ImportMismatch(f"SAN's reference code feeds slot i the scale 0.7 - 0.1*i, which equals resolution/320 "
                             f"only for {fitting}; --resolutions {' '.join(map(str, resolutions))} would generate "
                             f"other kernels. Use --resolutions {' '.join(map(str, fitting))}")


def _hint(state: dict, paper: str) -> str:
    """What the checkpoint looks like: its number of BN slots and classes, for the error message."""
    slots = {int(k.rpartition(".bn_")[2].split(".")[0]) for k in state if ".bn_" in k}
    fc = [v.shape for k, v in state.items() if k.split(".")[-2:] in (["module", "weight"],) and v.ndim == 2]
    parts = []
    if slots:
        parts.append(f"{max(slots) + 1} BN slots (so {max(slots) + 1} --resolutions)")
    if fc:
        parts.append(f"{fc[-1][0]} classes (--num-classes {fc[-1][0]})")
    layers = sorted({k.split(".")[0] for k in state})
    parts.append("top-level modules " + ", ".join(layers[:8]))
    if paper == "rsnets" and any(k.split(".")[-2].startswith("fc") and v.ndim == 2 and v.shape[1] == 1 for k, v in state.items()
                                 if k.count(".") >= 2):
        parts.append("it looks like a SAN checkpoint: try `import-reference san`")
    if paper == "san" and not any(k.rpartition(".")[0].endswith(tuple(f"fc{i}" for i in range(1, 5))) for k in state):
        parts.append("it has no meta nets (fc1, fc2, ...): try `import-reference rsnets`")
    return "; ".join(parts)


def _mred_alpha(state: dict, resolutions: list[int], does_not_fit: str) -> torch.Tensor | None:
    """RS-Nets' MRED weights, taken out of ``state``: one per training resolution, or None if absent."""
    alpha = state.pop(MRED_KEY, None)
    if alpha is None:
        return None
    if alpha.ndim != 1 or len(alpha) != len(resolutions) or not alpha.is_floating_point():
        fix = (f"it holds one MRED weight per training resolution, so the checkpoint was trained at {len(alpha)}: "
               f"give --resolutions {len(alpha)} sizes" if alpha.ndim == 1 and alpha.is_floating_point()
               else "RS-Nets' MRED weights are a 1-D float tensor, one per resolution: this is not an RS-Nets checkpoint")
        raise ImportMismatch(f"{does_not_fit}: key '{MRED_KEY}' has shape {list(alpha.shape)}, expected "
                             f"[{len(resolutions)}]; {fix}")
    return alpha.detach().to(torch.float32)


def import_reference(paper: str, checkpoint: Path, backbone: str, resolutions: list[int], num_classes: int,
                     small_input: bool = False, width: int | None = None) -> Imported:
    if paper not in PAPERS:
        raise ImportMismatch(f"unknown paper {paper!r}; choose one of {', '.join(PAPERS)}")
    if backbone not in SUPPORTED:
        raise ImportMismatch(f"--backbone {backbone}: the papers released {', '.join(SUPPORTED[:2])} and "
                             f"{SUPPORTED[3]}; importable here: {', '.join(SUPPORTED)}")
    if any(r <= 0 for r in resolutions):
        raise ImportMismatch(f"--resolutions must be positive, got {' '.join(map(str, resolutions))}")
    if paper == "san":
        _check_san_scales(list(resolutions))
    state = reference_state(read_payload(checkpoint))
    config = reference_config(paper, backbone, resolutions, num_classes, small_input, width)
    _, net = build_model(config, num_classes)
    expected = expected_keys(paper, backbone, net)
    where = f"--backbone {backbone} --resolutions {' '.join(map(str, resolutions))} --num-classes {num_classes}"
    alpha = _mred_alpha(state, resolutions, f"{checkpoint} does not fit a {paper} {where}") if paper == "rsnets" else None
    missing = [k for k in expected if k not in state]
    unused = [k for k in state if k not in expected and _unused_by_reference(paper, k)]
    unknown = [k for k in state if k not in expected and k not in unused]
    if missing or unknown:
        problem = (f"key {missing[0]!r} (shape {list(expected[missing[0]][0])}) is missing"
                   f"{f' ({len(missing)} missing in all)' if len(missing) > 1 else ''}" if missing else
                   f"key {unknown[0]!r} (shape {list(state[unknown[0]].shape)}) is not part of a {paper} {backbone}"
                   f"{f' ({len(unknown)} unknown keys in all)' if len(unknown) > 1 else ''}")
        raise ImportMismatch(f"{checkpoint} does not fit a {paper} {where}: {problem}. The checkpoint has "
                             f"{_hint(state, paper)}")
    for key, (shape, setter) in expected.items():
        found = tuple(state[key].shape)
        if found != shape:
            raise ImportMismatch(f"{checkpoint} does not fit a {paper} {where}: key {key!r} has shape {list(found)}, "
                                 f"expected {list(shape)}. The checkpoint has {_hint(state, paper)}")
    with torch.no_grad():
        for key, (shape, setter) in expected.items():
            setter(state[key].to(torch.float32) if state[key].is_floating_point() else state[key])
        if alpha is not None:
            net.mred.alpha.copy_(alpha)
    notes = []
    if unused:
        notes.append(f"{len(unused)} keys the reference forward never reads were left out (SAN ResNets build "
                     f"torchvision's downsample branch but use fc3/bn3 or fc4/bn4): {', '.join(unused[:4])}"
                     f"{', ...' if len(unused) > 4 else ''}")
    if alpha is not None:
        weights = ", ".join(f"{w:.3f} ({r} px)" for r, w in zip(resolutions, torch.softmax(alpha, 0).tolist()))
        notes.append(f"MRED alpha imported from '{MRED_KEY}': ensemble weights softmax(alpha) = {weights}")
    elif paper == "rsnets":
        notes.append(f"MRED alpha: the checkpoint has no '{MRED_KEY}' (RS-Nets' training script saves one), so it "
                     "keeps its initial ones (equal ensemble weights; alpha never changes one resolution's logits)")
    net.eval()
    return Imported(config, net, num_classes, notes)
