"""A table's cells by panel, row label and column label, so that a table test checks a cell and, when
it fails, names it.

``table_cells`` runs ``make_tables`` in-process with ``--format csv`` (one line per cell, see
``analysis.tables.render.CSV_HEADER``) and keeps the notes it prints on stderr; ``Cells.of`` reads a
``Table`` a builder returned. Rendering itself (Markdown bold, LaTeX escapes) is checked on the
rendered text, in the tests about rendering.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from analysis import make_tables
from analysis.tables.model import Table
from analysis.tables.render import CSV_HEADER


def by_column(columns, *texts: str) -> dict[str, str]:
    """The expected row ``{column: text}``; refuses a row of another length (``zip`` would cut it)."""
    columns = [str(c) for c in columns]
    if len(columns) != len(texts):
        raise ValueError(f"{len(texts)} texts for {len(columns)} columns {columns}")
    return dict(zip(columns, texts))


@dataclass
class PanelCells:
    title: str
    columns: list[str] = field(default_factory=list)  # value columns, in order (not the row-label column)
    rows: dict[str, dict[str, tuple[str, bool]]] = field(default_factory=dict)  # label -> column -> (text, marked)
    corner: str | None = None  # the row-label column's name; a Table has it, the CSV does not

    def add(self, row: str, column: str, text: str, marked: bool) -> None:
        if column not in self.columns:
            self.columns.append(column)
        cells = self.rows.setdefault(row, {})
        if column in cells:
            raise ValueError(f"panel {self.title!r}: cell ({row!r}, {column!r}) twice")
        cells[column] = (text, marked)

    @property
    def row_labels(self) -> list[str]:
        return list(self.rows)

    def row(self, label: str) -> dict[str, str]:
        if label not in self.rows:
            raise KeyError(f"panel {self.title!r} has no row {label!r}; rows: {self.row_labels}")
        return {column: text for column, (text, _) in self.rows[label].items()}

    @property
    def grid(self) -> dict[str, dict[str, str]]:
        """Every row as ``{column: text}``, by row label."""
        return {label: self.row(label) for label in self.rows}

    def __getitem__(self, key: tuple[str, str]) -> str:
        row, column = map(str, key)
        cells = self.row(row)
        if column not in cells:
            raise KeyError(f"panel {self.title!r}, row {row!r} has no column {column!r}; columns: {list(cells)}")
        return cells[column]

    @property
    def marked(self) -> set[tuple[str, str]]:
        """(row, column) of the cells rendered bold: proxy inference, or the best of a column."""
        return {(row, column) for row, cells in self.rows.items() for column, (_, mark) in cells.items() if mark}

    @property
    def texts(self) -> list[str]:
        return [text for cells in self.rows.values() for text, _ in cells.values()]


@dataclass
class Cells:
    """One table: its panels in order and the notes under it (missing-lines, footnotes)."""
    name: str
    panels: list[PanelCells] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    legend: list[str] = field(default_factory=list)  # a Table's; make_tables prints it with Markdown only

    @classmethod
    def of(cls, table: Table) -> Cells:
        cells = cls(table.name, notes=list(table.notes), legend=list(table.legend))
        for panel in table.panels:
            found = PanelCells(panel.title, corner=panel.header[0])
            for row in panel.rows:
                for column, cell in zip(panel.header[1:], row[1:], strict=True):
                    found.add(row[0].text, column, cell.text, cell.marked)
            cells.panels.append(found)
        return cells

    def panel(self, title_part: str) -> PanelCells:
        """The panel titled ``title_part``, else the one panel whose title contains it."""
        found = [p for p in self.panels if p.title == title_part] or [p for p in self.panels if title_part in p.title]
        if len(found) != 1:
            raise KeyError(f"{self.name}: {len(found)} panels titled like {title_part!r}; "
                           f"titles: {[p.title for p in self.panels]}")
        return found[0]

    def only_panel(self) -> PanelCells:
        if len(self.panels) != 1:
            raise KeyError(f"{self.name} has {len(self.panels)} panels: {[p.title for p in self.panels]}")
        return self.panels[0]

    def row(self, label: str) -> dict[str, str]:
        return self.only_panel().row(label)

    def __getitem__(self, key: tuple[str, str]) -> str:
        return self.only_panel()[key]

    @property
    def texts(self) -> list[str]:
        return [text for panel in self.panels for text in panel.texts]

    @property
    def missing(self) -> list[str]:
        """The notes that name a missing model or cell."""
        return [line for line in self.notes if line.startswith("missing: ")]


def parse_csv(text: str, notes_text: str = "") -> dict[str, Cells]:
    """``make_tables --format csv`` output (several tables in one CSV) and its stderr, per table."""
    reader = csv.reader(io.StringIO(text))
    if next(reader) != CSV_HEADER:
        raise ValueError(f"not make_tables CSV: {text[:200]!r}")
    tables: dict[str, Cells] = {}
    for name, panel, row, column, value, marked in reader:
        cells = tables.setdefault(name, Cells(name))
        if not cells.panels or cells.panels[-1].title != panel:
            cells.panels.append(PanelCells(panel))
        cells.panels[-1].add(row, column, value, marked == "1")
    for line in notes_text.splitlines():  # "<table>: <note>"
        name, _, note = line.partition(": ")
        if name in tables:
            tables[name].notes.append(note)
    return tables


def run_make_tables(capsys, *argv: str) -> tuple[int, str, str]:
    code = make_tables.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_cells(capsys, uri: str, name: str, *extra: str) -> Cells:
    """Table ``name`` of the store at ``uri`` as ``make_tables`` builds it (``extra``: more options)."""
    code, out, err = run_make_tables(capsys, name, "--tracking-uri", uri, "--no-log", "--format", "csv", *extra)
    assert code == 0, err
    tables = parse_csv(out, err)
    assert list(tables) == [name], (list(tables), err)
    return tables[name]
