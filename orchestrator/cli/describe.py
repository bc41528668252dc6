"""``resolab describe``: parameters, MAdds and storage of a method's model, without training it."""
from __future__ import annotations

import argparse
import json

from backbones.catalog import BACKBONES, BN_CHOICES, split_external
from jobspec.one_line_parser import whole_number
from methods.catalog import METHODS


def describe_command(args) -> int:
    from analysis.describe import describe, validated
    from jobspec import ConfigError, JobConfig
    from jobspec.schema import repeated_resolutions

    # A value the schema refuses, or a combination it refuses (validate), is a ConfigError that names it.
    # A resolution given twice is one. `individual` over several resolutions is the set of I-Nets
    # (RS-Nets Table 2's column): each of its one-resolution jobs is validated, not the set as one job.
    cfg = validated(JobConfig.parse({
        "model": {"backbone": args.backbone, "small_input": args.small_input, "weight_bits": args.weight_bits,
                  "act_bits": args.act_bits},
        "method": {"name": args.method, "bn": args.bn, "convs": args.convs, "meta_hidden": args.meta_hidden},
        "data": {"resolutions": sorted(args.resolutions, reverse=True)}}))
    # An I-Net set's rows are validated one by one, so a resolution listed twice is checked here.
    if repeated := repeated_resolutions(sorted(args.resolutions, reverse=True)):
        raise ConfigError(repeated)
    info = describe(cfg, args.num_classes)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if info["models"] > 1:
        each = info["model_params"][0]
        print(f"{info['backbone']} / {info['method']}: a set of {info['models']} I-Nets, one per resolution: "
              f"{info['total_params']:,} params in all ({info['total_params_M']:.2f} x 2^20), "
              f"{each:,} ({each / 2**20:.2f} x 2^20) each")
        for r, m in info["madds"].items():
            print(f"  {r:>4} px: {m / 1e6:,.1f} M MAdds (its own I-Net)")
    else:
        print(f"{info['backbone']} / {info['method']}: {info['total_params']:,} params "
              f"({info['total_params_M']:.2f} x 2^20, 1 model)")
        for r, m in info["madds"].items():
            print(f"  {r:>4} px: {m / 1e6:,.1f} M MAdds")
    across = f" (across the {info['models']} models)" if info["models"] > 1 else ""
    print(f"  storage: {info['storage_bits']:g} bits per conv weight{across}, {info['size_MB']:g} MB")
    return 0


def backbone_name(value: str) -> str:
    """--backbone: a built-in name or torchvision:/timm:<name>; whether the library has that name is
    checked with the config (close names suggested there)."""
    if value in BACKBONES or split_external(value):
        return value
    choices = ", ".join(f"'{b}'" for b in BACKBONES)
    raise argparse.ArgumentTypeError(f"invalid choice: '{value}' (choose from {choices}, or torchvision:<name> "
                                     "or timm:<name>)")


def add_subcommand(sub) -> None:
    p = sub.add_parser("describe", help="parameters and MAdds of a method's model (RS-Nets Table 2 style)")
    p.add_argument("--backbone", required=True, metavar="{" + ",".join(BACKBONES) + "}", type=backbone_name,
                   help="network: a built-in one, or torchvision:<name> / timm:<name> (a BatchNorm CNN of those "
                        "libraries, e.g. timm:resnet10t, torchvision:mobilenet_v3_small)")
    p.add_argument("--method", default="rsnet", choices=list(METHODS), help="training method (default rsnet)")
    p.add_argument("--resolutions", type=whole_number(1), nargs="+", default=[224, 192, 160, 128, 96],
                   metavar="PX", help="input sizes in pixels (default 224 192 160 128 96)")
    p.add_argument("--num-classes", type=whole_number(1), default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--bn", default="private", choices=BN_CHOICES,
                   help="batch norm per resolution (private) or one for all (shared)")
    p.add_argument("--convs", default="meta", choices=["meta", "private"], help="san only")
    p.add_argument("--meta-hidden", type=whole_number(0), default=0, help="san only: hidden units of the meta net")
    p.add_argument("--small-input", action="store_true", help="3x3 stride-1 stem, no max-pool (16-64 px images)")
    p.add_argument("--weight-bits", type=int, default=32, help="bits of quantized conv weights (32: full precision)")
    p.add_argument("--act-bits", type=int, default=32, help="bits of quantized activations, preact_* only (32: none)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=describe_command)
