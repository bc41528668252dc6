"""One route of a switchable model as a plain CNN file (``resolab export``).

The route is baked by ``backbones.materialize`` (generated kernels, the chosen or interpolated BN,
quantized weights), so the file costs what a plain CNN of that architecture costs and needs nothing
of resolab to run. Input: float32 N x 3 x R x R, normalised with the ImageNet mean and std
(``NORMALISATION``) exactly as resolab's models see it; the batch dimension is dynamic. Normalisation
is not baked in on purpose: the file then equals the switchable model's backbone at that route, so
the check below compares like with like, and a deployment keeps its own preprocessing.

Before a file is renamed into place it is loaded back from disk and run on random input; its logits
must match the switchable model's (``at_resolution`` with the same route) within 1e-4 relative to
the largest logit, or the export fails and writes nothing.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from backbones import materialize
from backbones.preprocess import IMAGENET_MEAN, IMAGENET_STD
from orchestrator.deploy.model_file import LoadedModel, ModelFileError, check_creatable, write_out
from records.files import atomic_write

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
TOLERANCE = 1e-4
NORMALISATION = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": "pixels / 255, then (x - mean) / std"}
INDEX_NAME = "index.json"


class ExportError(ModelFileError):
    """An export that cannot be made or does not match the switchable model."""


@dataclass(frozen=True)
class RouteChoice:
    """How the switchable model runs at ``resolution``: BN and eps modes, or a training slot (a matrix row)."""
    resolution: int
    bn: str = "nearest"
    eps: str = "proxy"
    row: int | None = None  # a training resolution whose slot to use; None: chosen from the resolution

    def slot(self, net) -> int | None:
        if self.row is None:
            return None
        if self.row not in net.resolutions:
            raise ExportError(f"--row {self.row} is not a training resolution of this model "
                              f"({', '.join(map(str, net.resolutions))})")
        return net.resolutions.index(self.row)

    def describe(self) -> str:
        row = f", slot of {self.row}" if self.row is not None else ""
        return f"{self.resolution}px bn={self.bn} eps={self.eps}{row}"


@dataclass
class Exported:
    path: str
    resolution: int
    route: str
    seconds: float
    max_rel_error: float
    checked_with: str


# The largest input an export (or pick) builds: 8x the papers' largest test resolution (256). The
# check run holds a 1 x 3 x R x R input and the activations of R, so memory grows as R^2: at 2048 a
# ResNet-50's largest activation is about 0.3 GB, at 100000 the input alone would be 120 GB.
MAX_RESOLUTION = 2048


def check_resolution(resolution: int) -> None:
    if not isinstance(resolution, int) or resolution <= 0:
        raise ExportError(f"--resolution must be a positive number of pixels, got {resolution}")
    if resolution > MAX_RESOLUTION:
        gigabytes = 3 * resolution ** 2 * 4 / 1e9
        raise ExportError(f"--resolution {resolution} is above resolab's limit of {MAX_RESOLUTION} px (its input "
                          f"alone would take {gigabytes:.3g} GB, its activations many times more); "
                          f"export at {MAX_RESOLUTION} px or less")


def plain_model(net, route: RouteChoice) -> nn.Module:
    check_resolution(route.resolution)
    return materialize(net, route.resolution, bn=route.bn, eps=route.eps, slot=route.slot(net)).eval()


@torch.no_grad()
def reference_logits(net, route: RouteChoice, x: torch.Tensor) -> torch.Tensor:
    net.eval()
    with net.at_resolution(route.resolution, bn=route.bn, eps=route.eps, slot=route.slot(net)):
        return net.backbone(x)


def _sample(resolution: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))


def _write_torchscript(plain: nn.Module, x: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; tracing a plain CNN is exact
        traced = torch.jit.trace(plain, x, check_trace=False)
        torch.jit.save(traced, str(path))


def _run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu")(x)


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("--format onnx needs the onnx package: pip install 'resolab[export]' "
                          "(or use --format torchscript)") from None
    return onnx


def _write_onnx(plain: nn.Module, x: torch.Tensor, path: Path) -> None:
    require_onnx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter (dynamo=False): the torch.export one needs onnxscript as well,
        # and a plain CNN has no control flow that would need it.
        try:
            torch.onnx.export(plain, (x,), str(path), dynamo=False, input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17)
        except torch.onnx.errors.OnnxExporterError as exc:  # e.g. an operator ONNX lacks (searchsorted)
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise ExportError(f"this model cannot be written as ONNX ({first}); use --format torchscript") from None


def _run_onnx(path: Path, x: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    onnx = require_onnx()
    onnx.checker.check_model(str(path))
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "onnx.checker (onnxruntime not installed: logits not compared)"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": x.numpy()})
    return torch.from_numpy(logits), "onnxruntime"


def relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def export_route(loaded: LoadedModel, route: RouteChoice, fmt: str, out: Path) -> Exported:
    """Write ``out`` (atomically) after checking its logits against the switchable model's."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    start = time.perf_counter()
    net = loaded.net.cpu().eval()
    plain = plain_model(net, route)
    x = _sample(route.resolution, batch=1)
    expected = reference_logits(net, route, x)
    result = {}

    # Traced with one image, run back with two (the first is x): the batch dimension must be dynamic.
    x2 = torch.cat([x, _sample(route.resolution, batch=2)[1:]])

    @torch.no_grad()
    def write(tmp: Path) -> None:
        if fmt == "torchscript":
            _write_torchscript(plain, x, tmp)
            found, how = _run_torchscript(tmp, x2), "torch.jit.load"
        else:
            _write_onnx(plain, x, tmp)
            found, how = _run_onnx(tmp, x2)
        error = 0.0 if found is None else relative_error(found[:1], expected)
        if error > TOLERANCE:
            raise ExportError(f"the exported {fmt} model's logits differ from the switchable model's at "
                              f"{route.describe()} by {error:.2e} (relative; limit {TOLERANCE:g}); nothing written")
        result.update(error=error, how=how)

    write_out(out, write)
    return Exported(str(out), route.resolution, route.describe(), time.perf_counter() - start,
                    result["error"], result["how"])


def export_all(loaded: LoadedModel, fmt: str, out_dir: Path, bn: str = "nearest", eps: str = "proxy",
               matrix=None) -> tuple[list[Exported], Path]:
    """One file per training resolution (each at its own slot) plus ``index.json``: resolution, file,
    expected top-1 (the matrix's fixed cell at train = test resolution, when a matrix is known) and MAdds.
    Written into a temporary directory that becomes ``out_dir`` only when every file is checked."""
    from backbones.complexity import count_madds

    out_dir = check_out_dir(out_dir)
    exported = []

    def write(tmp: Path) -> None:
        entries = []
        name = loaded.source.get("job") or Path(loaded.source.get("file", "model")).stem
        for r in dict.fromkeys(loaded.net.resolutions):
            route = RouteChoice(int(r), bn=bn, eps=eps, row=int(r))
            file = f"{name}-r{r}{FORMATS[fmt]}"
            done = export_route(loaded, route, fmt, tmp / file)
            done.path = str(out_dir / file)
            exported.append(done)
            entries.append({"resolution": int(r), "file": file, "route": done.route,
                            "expected_top1": expected_top1(matrix, int(r)),
                            "madds": int(count_madds(loaded.net, int(r)))})
        index = {"format": fmt, "input": {"shape": ["batch", 3, "R", "R"], "dtype": "float32", **NORMALISATION},
                 "method": loaded.config.method.name, "backbone": loaded.config.model.backbone,
                 "source": loaded.source, "routes": entries,
                 "exports": [asdict(e) for e in exported]}
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2))

    try:
        atomic_write(out_dir, write, directory=True)
    except OSError as exc:
        raise ExportError(f"--out {out_dir}: cannot create it ({exc.strerror or exc}); choose another --out") from None
    return exported, out_dir / INDEX_NAME


def check_out_dir(out_dir: Path) -> Path:
    """``--out`` of ``--all``: a new or empty directory (never replaced: it may hold other files), in a
    place where one can be made."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"--out {out_dir} exists and is not an empty directory; choose a new one")
    check_creatable(out_dir, out_dir)
    return out_dir


def expected_top1(matrix, resolution: int) -> float | None:
    if matrix is None:
        return None
    f = matrix.frame
    cell = f[(f["mode"] == "fixed") & (f["row"] == resolution) & (f["test_res"] == resolution)]
    return None if cell.empty else round(float(cell["top1"].iloc[0]), 4)
