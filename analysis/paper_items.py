"""Every table and figure of both papers, and what rebuilds it: the inventory ``make_tables.py --list``
prints. An item with no builder says why (a schematic has no numbers to rebuild)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperItem:
    paper: str
    item: str
    table: str | None  # the make_tables.py name that rebuilds it
    why_not: str = ""  # for an item without a builder


ITEMS = (
    PaperItem("SAN", "Fig. 1", "fig1"),
    PaperItem("SAN", "Fig. 2", None, "a schematic of the method, no numbers"),
    *(PaperItem("SAN", f"Table {i}", f"san_table{i}") for i in range(1, 8)),
    PaperItem("RS-Nets", "Fig. 1", "fig1"),
    PaperItem("RS-Nets", "Fig. 2", None, "a schematic of the method, no numbers"),
    PaperItem("RS-Nets", "Fig. 3 (left)", None, "an illustration of crops, no numbers"),
    PaperItem("RS-Nets", "Fig. 3 (right)", "rsnets_fig3"),
    PaperItem("RS-Nets", "Table 1", "rsnets_table1"),
    PaperItem("RS-Nets", "Table 2", "rsnets_table2"),
    PaperItem("RS-Nets", "Table 3", "rsnets_table3"),
    PaperItem("RS-Nets", "Table 4", "rsnets_table4"),
    PaperItem("RS-Nets", "Fig. 4", "rsnets_fig4"),
    PaperItem("RS-Nets", "Fig. 5", "rsnets_fig5"),
    PaperItem("RS-Nets", "Table 5", "rsnets_table5"),
    PaperItem("RS-Nets", "Table 6", "rsnets_table6"),
)
