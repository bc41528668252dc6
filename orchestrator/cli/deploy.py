"""``resolab import-reference``, ``export``, ``pick`` and ``evaluate-model``: a trained model as a file for deployment.

Their user errors (``ModelFileError`` and subclasses: a file that cannot be read, weights that do not fit,
a run that did not finish, a bad resolution) are ValueErrors that ``common.user_error`` reports in one line.
torch and MLflow load inside each command, so ``resolab --help`` does not wait for them.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from jobspec.one_line_parser import whole_number
from orchestrator.cli.common import UsageError, check_device

logger = logging.getLogger(__name__)

SOURCE_HELP = ("a model file (resolab import-reference), a job's checkpoint.pt, or the MLflow run id of a "
               "finished job (or of a resolab evaluate-model run)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value:g}")
    return value


def _tracking(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the project's SQLite file)")
    p.add_argument("--storage", help="checkpoint storage the run used, for runs that do not record it "
                                     "(default <project>/.resolab/ray)")


# What import-reference reads, said when the path given is something else.
REFERENCE_CHECKPOINT = ("the checkpoint file the reference code's training script saved (a state dict, bare or "
                        "under 'state_dict', usually .pth or .pth.tar)")


def _check_device(name: str | None) -> str | None:
    """cpu or cuda[:N], the devices pick and evaluate-model run on, checked before anything loads."""
    if name is not None and name.split(":")[0] not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r} is not one resolab runs on; use cpu or cuda (cuda:N for GPU N)")
    return check_device(name)


def _import_reference(args) -> int:
    from orchestrator.deploy.model_file import check_checkpoint_path, check_out, save_model_file
    from orchestrator.deploy.reference_import import import_reference

    check_out(Path(args.out), args.force)
    check_checkpoint_path(Path(args.checkpoint), REFERENCE_CHECKPOINT)
    imported = import_reference(args.paper, Path(args.checkpoint), args.backbone, args.resolutions, args.num_classes,
                                small_input=args.small_input, width=args.width)
    source = {"kind": f"reference-{args.paper}", "checkpoint": str(Path(args.checkpoint).resolve())}
    out = save_model_file(Path(args.out), imported.config, imported.net, imported.num_classes, source)
    for note in imported.notes:
        logger.info(f"note: {note}")
    logger.info(f"wrote {out}: {args.paper} {args.backbone} at {' '.join(map(str, args.resolutions))}, "
          f"{imported.num_classes} classes")
    return 0


def _export(args) -> int:
    from orchestrator.deploy.export import RouteChoice, check_out_dir, check_resolution, export_all, export_route
    from orchestrator.deploy.model_file import check_out
    from orchestrator.deploy.model_source import resolve_source

    if args.all == (args.resolution is not None):
        raise UsageError("give either --resolution R (one route) or --all (every training resolution)")
    if args.all:  # the output first: a bad --out is said before the model loads
        check_out_dir(Path(args.out))
    else:
        check_resolution(args.resolution)
        check_out(Path(args.out), args.force)
    source = resolve_source(args.source, args.tracking_uri, args.storage)
    if args.all:
        exported, index = export_all(source.model, args.format, Path(args.out), args.bn, args.eps, source.matrix)
        for e in exported:
            logger.info(f"wrote {e.path} ({e.route}; {e.seconds:.2f} s, max relative error {e.max_rel_error:.1e}, "
                        f"{e.checked_with})")
        logger.info(f"wrote {index}")
        return 0
    route = RouteChoice(args.resolution, bn=args.bn, eps=args.eps, row=args.row)
    e = export_route(source.model, route, args.format, Path(args.out))
    logger.info(f"wrote {e.path} ({e.route}; {e.seconds:.2f} s, max relative error {e.max_rel_error:.1e}, "
                f"{e.checked_with})")
    return 0


def _pick(args) -> int:
    import torch

    from backbones.complexity import count_madds
    from orchestrator.deploy.model_source import resolve_source
    from orchestrator.deploy.pick import pick, render, wall_clock_timer

    _check_device(args.device)
    source = resolve_source(args.source, args.tracking_uri, args.storage, need_matrix=True)
    if source.matrix is None:
        raise UsageError(f"run {args.source} has no accuracy matrix artifact to pick from")
    before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        net = source.model.net
        result = pick(net, source.matrix, args.budget_ms, wall_clock_timer(args.batch, args.device),
                      madds=lambda r: int(count_madds(net, r)))
    finally:
        torch.set_num_threads(before)
    if args.json:
        print(json.dumps({"source": args.source, "batch": args.batch, "threads": args.threads or before,
                          "device": args.device, **result.to_dict()}, indent=2))
    else:
        print(f"batch {args.batch}, {args.threads or before} thread(s), {args.device}; latency = median of 15 runs "
              "after 3 warm-up runs of the exported plain model")
        print(render(result, args.source))
    return 0 if result.choice else 1


def _evaluate_model(args) -> int:
    from orchestrator.deploy.evaluate_model import evaluate_model

    matrix, run_id = evaluate_model(Path(args.model), args.data, args.set, args.tracking_uri,
                                    _check_device(args.device), suite=args.suite)
    print(matrix.to_text())
    logger.info(f"recorded as MLflow run {run_id} (experiment {args.suite}); pick a resolution with: "
          f"resolab pick {run_id} --budget-ms T")
    return 0


def add_subcommands(sub) -> None:
    """Torch-free: the paper and backbone names are checked by ``import_reference`` (a one-line error)."""
    p = sub.add_parser("import-reference", help="turn a checkpoint of the papers' reference code into a resolab model file")
    p.add_argument("paper", help="san (d-li14/SAN) or rsnets (yikaiw/RS-Nets, non-quantization)")
    p.add_argument("checkpoint", help="the released .pth/.tar file (a state dict, bare or under 'state_dict')")
    p.add_argument("--backbone", required=True, help="resnet18, resnet50 or mobilenet_v2 (resnet_tiny for tests)")
    p.add_argument("--resolutions", type=whole_number(1), nargs="+", required=True, metavar="PX",
                   help="training resolutions, one per BN slot, largest first (the papers: 224 192 160 128 96)")
    p.add_argument("--num-classes", type=whole_number(1), required=True, help="classifier outputs (1000 for ImageNet)")
    p.add_argument("--small-input", action="store_true", help="3x3 stride-1 stem (only for checkpoints trained so)")
    p.add_argument("--width", type=whole_number(1), help="resnet_tiny only: channels of its first stage (default 16)")
    p.add_argument("--out", required=True, help="model file to write (MODEL.pt); an existing file only with --force")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_import_reference)

    p = sub.add_parser("export", help="one route of a model as a plain TorchScript or ONNX CNN, checked against it")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--resolution", type=whole_number(1), help="input size in pixels")
    p.add_argument("--all", action="store_true", help="one file per training resolution plus index.json into --out DIR")
    p.add_argument("--row", type=whole_number(1), help="use this training resolution's slot (a matrix row) "
                                                     "instead of choosing from --resolution")
    p.add_argument("--bn", default="nearest", choices=["nearest", "interpolate"], help="BN at an unseen resolution")
    p.add_argument("--eps", default="proxy", choices=["proxy", "ideal"], help="SAN: eps of the nearest training "
                                                                               "resolution (proxy) or of R (ideal)")
    p.add_argument("--format", default="torchscript", choices=["torchscript", "onnx"], help="file format")
    p.add_argument("--out", required=True, help="file to write, an existing one only with --force (with --all: a "
                                                "new or empty directory)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file (never a directory)")
    _tracking(p)
    p.set_defaults(func=_export)

    p = sub.add_parser("pick", help="time every test resolution here and pick the most accurate route within a budget")
    p.add_argument("source", help="the MLflow run id of a finished job (its matrix gives the accuracies)")
    p.add_argument("--budget-ms", type=_positive_float, required=True, help="latency budget per batch, milliseconds")
    p.add_argument("--batch", type=whole_number(1), default=1, help="images per forward (default 1)")
    p.add_argument("--threads", type=whole_number(1), help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _tracking(p)
    p.set_defaults(func=_pick)

    p = sub.add_parser("evaluate-model", help="the train x test matrix of a model file, recorded in MLflow like a job")
    p.add_argument("model", help="model file (resolab import-reference) or a job's checkpoint.pt")
    p.add_argument("--data", help="ImageFolder root with train/ and val/; required for a model imported from the "
                                  "papers' code (default: the data the model's config names)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable (e.g. eval.test_resolutions=[256,224,192])")
    p.add_argument("--suite", default="imported", help="MLflow experiment to record the run in (default imported)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the project's SQLite file)")
    p.set_defaults(func=_evaluate_model)
