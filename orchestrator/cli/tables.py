"""``resolab tables``: the papers' tables and figures from MLflow, the same command as ``python analysis/make_tables.py``."""
from __future__ import annotations

import argparse

from analysis import make_tables


def add_subcommand(sub) -> None:
    p = sub.add_parser("tables", help="rebuild the papers' tables and figures from the MLflow runs "
                                      "(same as python analysis/make_tables.py)",
                       description=make_tables.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    make_tables.add_arguments(p)
    p.set_defaults(func=lambda args: make_tables.run(args, prog="resolab tables"))
