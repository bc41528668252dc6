"""The table builders by name, for make_tables.py (``TableSpec.builder``).

A builder is a pure function ``(runs frame, commands, digits=...) -> Table`` of the job runs that
``mlflow.search_runs`` returns (``analysis.runs`` says which count); ``analysis.table_render`` writes
the ``Table`` as Markdown, LaTeX or CSV. Builders with per-image cells also take ``predictions`` (run
id -> the run's ``analysis.predictions`` frame, or None) and, if they print gains over I-Nets, ``ci``
(an ``analysis.bootstrap.Bootstrap``, or None); make_tables passes those keywords only to builders
that declare them.
"""
from __future__ import annotations

from analysis.overview_tables import fig1, quickstart
from analysis.rsnets_fig3 import rsnets_fig3
from analysis.rsnets_fig5 import rsnets_fig5
from analysis.rsnets_table1 import rsnets_table1
from analysis.rsnets_table3 import rsnets_table3
from analysis.rsnets_table4 import rsnets_table4
from analysis.rsnets_tables import rsnets_fig4, rsnets_table2, rsnets_table5, rsnets_table6
from analysis.san_tables import san_table1, san_table2, san_table3, san_table4, san_table5, san_table6, san_table7

BUILDERS = {builder.__name__: builder for builder in (
    san_table1, san_table2, san_table3, san_table4, san_table5, san_table6, san_table7,
    rsnets_table3, rsnets_table4,
    rsnets_table1, rsnets_table2, rsnets_table5, rsnets_table6, rsnets_fig3, rsnets_fig4, rsnets_fig5, fig1, quickstart)}
