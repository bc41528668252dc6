"""Every table and figure resolab rebuilds, once: its name, builder, suites and the paper items it is.

A builder is a pure function ``(runs frame, commands, digits=...) -> Table`` of the job runs that
``mlflow.search_runs`` returns (``analysis.tables.runs`` says which count); ``analysis.tables.render``
writes the ``Table`` as Markdown, LaTeX or CSV. Builders with per-image cells also take ``predictions``
(run id -> the run's ``analysis.predictions`` frame, or None), those that print gains over I-Nets ``ci``
(an ``analysis.bootstrap.Bootstrap``, or None), and RS-Nets Fig. 3 ``gap_cdf``; ``TableSpec.build``
passes those keywords only to builders that declare them.

Builders are named by module, not imported here: they load pandas, matplotlib and torch, and
``--list`` and ``--help`` answer without them.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

# Keywords only the builders that read run artifacts (or bootstrap) declare; the others never see them.
ARTIFACT_OPTIONS = ("predictions", "ci", "gap_cdf")


@dataclass(frozen=True)
class TableSpec:
    name: str  # what make_tables.py / resolab tables takes; also the builder's function name
    module: str  # the module of analysis.tables that defines the builder
    suites: tuple[str, ...]  # MLflow experiments it reads, in order of preference
    about: str
    items: tuple[str, ...] = ()  # the paper items it rebuilds, as CONTENTS names them ("SAN Table 1")

    def builder(self):
        return getattr(importlib.import_module(f"analysis.tables.{self.module}"), self.name)

    def build(self, *args, **kwargs):
        builder = self.builder()
        taken = inspect.signature(builder).parameters
        return builder(*args, **{k: v for k, v in kwargs.items() if k not in ARTIFACT_OPTIONS or k in taken})


TABLES = {spec.name: spec for spec in [
    TableSpec("san_table1", "san", ("san_table1",), "I-Nets vs SAN matrices, proxy cells marked", ("SAN Table 1",)),
    TableSpec("san_table2", "san", ("san_table2",),
              "SAN ideal / ideal+BN calibration / proxy at new test resolutions", ("SAN Table 2",)),
    TableSpec("san_table3", "san", ("san_table3",), "SAN w/o scale distillation, and + shared BN", ("SAN Table 3",)),
    TableSpec("san_table4", "san", ("san_table4",), "privatized convs instead of the meta network", ("SAN Table 4",)),
    TableSpec("san_table5", "san", ("san_table5",), "accuracy drop of MLP 8 / 16 meta networks vs linear",
              ("SAN Table 5",)),
    TableSpec("san_table6", "san", ("san_table6",), "I-Nets vs SAN at large training resolutions", ("SAN Table 6",)),
    TableSpec("san_table7", "san", ("san_table7",), "SAN at its largest training resolution (+ FixRes runs)",
              ("SAN Table 7",)),
    TableSpec("rsnets_table1", "rsnets_table1", ("rsnets_table2",),
              "share of images right at one resolution, wrong at another (per-image predictions)",
              ("RS-Nets Table 1",)),
    TableSpec("rsnets_table2", "rsnets", ("rsnets_table2",),
              "I-Nets, I-max, Parallel, RS-Net: top-1/top-5, gains, MAdds, params", ("RS-Nets Table 2",)),
    TableSpec("rsnets_table3", "rsnets_table3", ("rsnets_table3",),
              "quantized I-Nets vs RS-Net (LQ-Nets W2/A32, W2/A2), storage bits and MB", ("RS-Nets Table 3",)),
    TableSpec("rsnets_table4", "rsnets_table4", ("rsnets_table4",),
              "MobileNetV2: adjusting width (I-Nets-w, published S/US) vs resolution (I-Nets-r, RS-Net)",
              ("RS-Nets Table 4",)),
    TableSpec("rsnets_table5", "rsnets", ("rsnets_table5",), "MRED distillation variants vs full", ("RS-Nets Table 5",)),
    TableSpec("rsnets_table6", "rsnets", ("rsnets_table6",),
              "multi/single resolution x single/multi crop (single-res single-crop = I-Nets)", ("RS-Nets Table 6",)),
    TableSpec("rsnets_fig3", "rsnets_fig3", ("rsnets_fig3",), "GAP activation CDFs under train vs test pre-processing",
              ("RS-Nets Fig. 3 (right)",)),
    TableSpec("rsnets_fig4", "rsnets", ("rsnets_fig4",), "shared vs private BN; RS-Net interpolated BN vs I-Nets",
              ("RS-Nets Fig. 4",)),
    TableSpec("rsnets_fig5", "rsnets_fig5", ("rsnets_fig5",),
              "parallel training on pairs and larger sets: top-1 change over each I-Net", ("RS-Nets Fig. 5",)),
    TableSpec("fig1", "overview", ("san_table1", "rsnets_table2", "rsnets_table3"),
              "accuracy vs test resolution, and top-1 vs MAdds", ("SAN Fig. 1", "RS-Nets Fig. 1")),
    TableSpec("quickstart", "overview", ("quickstart",), "the quickstart suite: Table-2 layout + I-Nets/SAN matrices"),
    TableSpec("search", "search", ("search_quickstart",),
              "a suite's search: best configuration per search, its matrix row, the spread over samples"),
]}


@dataclass(frozen=True)
class PaperItem:
    paper: str
    item: str
    why_not: str = ""  # for an item no table rebuilds: why (a schematic has no numbers)

    @property
    def name(self) -> str:
        return f"{self.paper} {self.item}"


# Both papers' tables and figures in the order each paper shows them, for ``--list``; which table
# rebuilds one is said once, by its TableSpec.
CONTENTS = (
    PaperItem("SAN", "Fig. 1"),
    PaperItem("SAN", "Fig. 2", "a schematic of the method, no numbers"),
    *(PaperItem("SAN", f"Table {i}") for i in range(1, 8)),
    PaperItem("RS-Nets", "Fig. 1"),
    PaperItem("RS-Nets", "Fig. 2", "a schematic of the method, no numbers"),
    PaperItem("RS-Nets", "Fig. 3 (left)", "an illustration of crops, no numbers"),
    PaperItem("RS-Nets", "Fig. 3 (right)"),
    *(PaperItem("RS-Nets", f"Table {i}") for i in range(1, 5)),
    PaperItem("RS-Nets", "Fig. 4"),
    PaperItem("RS-Nets", "Fig. 5"),
    PaperItem("RS-Nets", "Table 5"),
    PaperItem("RS-Nets", "Table 6"),
)


def table_of(item: PaperItem) -> TableSpec | None:
    """The table that rebuilds a paper item; None for one without numbers."""
    return next((spec for spec in TABLES.values() if item.name in spec.items), None)


def list_tables() -> str:
    """Every table and figure of both papers: the table that rebuilds it, its suite(s), what it shows;
    then the tables of resolab's own suites."""
    width = max(map(len, TABLES))
    lines, listed = [], set()
    for item in CONTENTS:
        spec = table_of(item)
        if spec is None:
            lines.append(f"{item.name:<22}  {'-':<{width}}  {item.why_not or 'not built yet'}")
            continue
        listed.add(spec.name)
        lines.append(f"{item.name:<22}  {spec.name:<{width}}  suite(s): {', '.join(spec.suites):<28}  {spec.about}")
    for spec in TABLES.values():
        if spec.name not in listed:
            lines.append(f"{'(resolab)':<22}  {spec.name:<{width}}  suite(s): {', '.join(spec.suites):<28}  {spec.about}")
    return "\n".join(lines)
