"""A ``Table`` as Markdown, LaTeX (booktabs) or long-form CSV, and as files with its figures."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from analysis import plots
from analysis.tables.model import MISSING, Table


def to_markdown(table: Table) -> str:
    out = [f"### {table.title}", ""]
    for panel in table.panels:
        out += [f"**{panel.title}**", "", _md_row(panel.header), "|" + "|".join(["---"] + ["---:"] * (len(panel.header) - 1)) + "|"]
        out += [_md_row([f"**{c.text}**" if c.marked and c.text != MISSING else c.text for c in row]) for row in panel.rows]
        out.append("")
    out += table.legend
    out += table.notes
    return "\n".join(out).rstrip() + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


_LATEX_REPLACEMENTS = (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                       ("±", r"$\pm$"), ("—", "---"), ("×", r"$\times$"), ("…", r"\ldots{}"), ("^", r"\^{}"))


def latex_escape(text: str) -> str:
    for old, new in _LATEX_REPLACEMENTS:
        text = text.replace(old, new)
    return text


def to_latex(table: Table) -> str:
    out = [f"% {table.name}: {_comment(table.title)}", r"% needs \usepackage{booktabs}"]
    for panel in table.panels:
        out += [r"\begin{table}[ht]", r"\centering", rf"\caption{{{latex_escape(table.title)} --- {latex_escape(panel.title)}}}",
                rf"\begin{{tabular}}{{l{'r' * (len(panel.header) - 1)}}}", r"\toprule",
                " & ".join(latex_escape(h) for h in panel.header) + r" \\", r"\midrule"]
        for row in panel.rows:
            out.append(" & ".join(rf"\textbf{{{latex_escape(c.text)}}}" if c.marked and c.text != MISSING
                                  else latex_escape(c.text) for c in row) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    out += [f"% {_comment(line)}" for line in table.legend + table.notes]
    return "\n".join(out).rstrip() + "\n"


def _comment(line: str) -> str:
    """A note as a LaTeX comment: ASCII, so any engine reads the file; commands stay copy-pasteable."""
    return line.replace("**bold**", "bold").replace("—", "--").replace("±", "+/-").replace("×", "x")


CSV_HEADER = ["table", "panel", "row", "column", "value", "marked"]


def to_csv(table: Table, header: bool = True) -> str:
    """Long form, one line per cell (panels have different columns); notes are not part of it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(CSV_HEADER)
    for panel in table.panels:
        for row in panel.rows:
            for column, cell in zip(panel.header[1:], row[1:]):
                writer.writerow([table.name, panel.title, row[0].text, column, cell.text, int(cell.marked)])
    return buffer.getvalue()


RENDERERS = {"md": to_markdown, "latex": to_latex, "csv": to_csv}
EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv"}  # of a table's file in each format


def render(table: Table, fmt: str = "md") -> str:
    return RENDERERS[fmt](table)


def write_table_files(table: Table, folder: Path, formats=("md", "latex", "csv")) -> list[Path]:
    """The table in each format plus its figures as PNG (``<table>_<figure>.png``)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = folder / f"{table.name}.{EXTENSIONS[fmt]}"
        path.write_text(render(table, fmt))
        written.append(path)
    for name, make_figure in table.all_figures().items():
        written.append(plots.save(make_figure(), folder / f"{table.name}_{name}.png"))
    return written
