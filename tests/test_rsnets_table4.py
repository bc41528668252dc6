"""RS-Nets Table 4 from a real MLflow SQLite store holding KNOWN runs.

The MobileNetV2 store holds the paper's own Table 4 numbers as runs (I-Nets-r as two seeds 0.5 below
and above them), so the rebuilt table must print the paper's rows; S-/US-MobileNetV2 come from
``analysis.published``, never from runs. Runs are logged as the orchestrator logs them (see
tests/test_tables.py).
"""
from __future__ import annotations

import io
import os
import shutil

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pandas as pd
import pytest
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from analysis import make_tables, published
from analysis.tables import render as table_render
from analysis.matrix import COLUMNS, Matrix
from records.batch import log_batched
from analysis.report import log_matrix_metrics
from analysis.tables.rsnets_table4 import rsnets_table4, width_label
from analysis.tables.store import fetch_runs
from jobspec import DataConfig, EvalConfig, Job, JobConfig, MethodConfig, ModelConfig, TrainConfig, config_hash, flatten, \
    param_value
from records.runs import job_tags
from tests.table_cells import Cells, by_column, table_cells

S = (224, 192, 160, 128, 96)
TESTS = (224, 192, 160, 128, 96)
# RS-Nets Table 4 as printed: I-Nets-r and RS-Net per resolution, I-Nets-w per width (1.0x = I-Nets-r at 224)
PAPER_INETS_R = {224: 72.1, 192: 71.0, 160: 69.5, 128: 66.8, 96: 62.6}
PAPER_RSNET = {224: 73.0, 192: 72.2, 160: 71.1, 128: 68.8, 96: 63.9}
PAPER_INETS_W = {0.8: 69.8, 0.65: 68.0, 0.5: 64.6, 0.35: 60.1}


def config(method: str, resolutions, backbone="mobilenet_v2", width_mult=1.0, seed=0, tests=TESTS) -> JobConfig:
    return JobConfig(model=ModelConfig(backbone=backbone, small_input=backbone == "resnet_tiny", width_mult=width_mult),
                     method=MethodConfig(name=method), data=DataConfig(resolutions=list(resolutions), num_classes=1000),
                     train=TrainConfig(epochs=2, seed=seed), eval=EvalConfig(test_resolutions=list(tests))).validate()


def diagonal(resolutions, tests, top1: dict[int, float]) -> Matrix:
    """Fixed-mode cells; off the diagonal one point per pixel lower (never read by Table 4)."""
    records = [("fixed", r, t, top1[r] - abs(r - t), top1[r] - abs(r - t) + 20) for r in resolutions for t in tests]
    return Matrix(pd.DataFrame.from_records(records, columns=COLUMNS))


class Suite:
    def __init__(self, client: MlflowClient, name: str):
        self.client, self.name, self.clock = client, name, 1_700_000_000_000
        self.experiment_id = client.create_experiment(name, artifact_location=(
            (os.path.dirname(client.tracking_uri[len("sqlite:///"):])) + f"/artifacts/{name}"))

    def job(self, cfg: JobConfig, matrix: Matrix, group: str | None = None) -> None:
        self.clock += 1000
        name = f"{cfg.method.name}-{cfg.model.backbone}-{cfg.model.width_mult}-{cfg.data.resolutions}-s{cfg.train.seed}"
        tags = job_tags(self.name, Job(name=name, config=cfg, hash=config_hash(cfg), point={}, group=group or name),
                        "test-code")
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags, start_time=self.clock).info.run_id
        log_batched(self.client, run_id, params=[Param(k, param_value(v)) for k, v in flatten(cfg).items()])
        log_matrix_metrics(self.client, run_id, matrix)
        self.client.set_terminated(run_id, status="FINISHED")


def fill_mobilenet(client: MlflowClient) -> None:
    s = Suite(client, "rsnets_table4")
    for seed, shift in ((0, -0.5), (1, 0.5)):
        for r in S:
            s.job(config("individual", [r], seed=seed), diagonal([r], TESTS, {r: PAPER_INETS_R[r] + shift}),
                  group=f"inets-s{seed}")
    s.job(config("rsnet", S), diagonal(S, TESTS, PAPER_RSNET))
    for width, top1 in PAPER_INETS_W.items():  # logged after the I-Nets-r set: newer, yet not mistaken for it
        s.job(config("individual", [224], width_mult=width), diagonal([224], TESTS, {224: top1}))


def fill_tiny(client: MlflowClient) -> None:
    """What --smoke leaves: resnet_tiny I-Nets at 32 24 16, here without the RS-Net."""
    s = Suite(client, "rsnets_table4")
    for r in (32, 24, 16):
        s.job(config("individual", [r], backbone="resnet_tiny", tests=(32, 24, 16)),
              diagonal([r], (32, 24, 16), {r: 40.0 + r / 2}), group="inets")


def store(empty_db, tmp_path, fill) -> str:
    path = tmp_path / "mlflow.db"
    shutil.copy(empty_db, path)
    fill(MlflowClient(f"sqlite:///{path}"))
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def mobilenet_store(empty_db, tmp_path_factory) -> str:
    """Filled once for this module; its tests only read it."""
    return store(empty_db, tmp_path_factory.mktemp("rsnets_table4"), fill_mobilenet)


def table(capsys, uri: str, fmt: str = "md") -> str:
    code = make_tables.main(["rsnets_table4", "--tracking-uri", uri, "--no-log", "--format", fmt])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_published_rows_are_the_papers():
    s, us = published.rows("RS-Nets", "Table 4", "mobilenet_v2")
    assert (s.row, s.cite, us.row, us.cite) == ("S-MobileNetV2", "[31]", "US-MobileNetV2", "[30]")
    assert [s.at(w) for w in (1.0, 0.8, 0.65, 0.5, 0.35)] == [70.5, None, None, 64.4, 59.7]
    assert [us.at(w) for w in (1.0, 0.8, 0.65, 0.5, 0.35)] == [71.5, 70.0, 68.3, 65.0, 62.2]
    assert published.rows("RS-Nets", "Table 4", "resnet_tiny") == []


def test_width_labels_as_the_paper():
    assert [width_label(w) for w in (1.0, 0.8, 0.65, 0.5, 0.35)] == ["1.0×", "0.8×", "0.65×", "0.5×", "0.35×"]


WIDTH_COLUMNS = ["MAdds", "I-Nets-w", "S-MobileNetV2 [31]", "US-MobileNetV2 [30]"]
RESOLUTION_COLUMNS = ["MAdds", "I-Nets-r", "RS-Net"]


def test_cells_are_the_papers_table(capsys, mobilenet_store):
    table = table_cells(capsys, mobilenet_store, "rsnets_table4")
    widths, resolutions = table.panel("left: adjusting the width"), table.panel("right: adjusting the resolution")
    assert widths.columns == WIDTH_COLUMNS and resolutions.columns == RESOLUTION_COLUMNS
    # Hand computation: I-Nets-r at 224 = seeds 71.6 and 72.6 -> mean 72.1, sample std sqrt(0.5) = 0.7; the
    # 1.0x I-Net is that same row. MAdds: torchvision's MobileNetV2 at 224, 1000 classes = 300.8M.
    assert widths.grid == {label: by_column(WIDTH_COLUMNS, *texts) for label, texts in {
        "1.0×": ["301M", "72.1 ± 0.7", "70.5", "71.5"],
        "0.8×": ["222M", "69.8", "—", "70.0"],
        "0.65×": ["162M", "68.0", "—", "68.3"],
        "0.5×": ["97.1M", "64.6", "64.4", "65.0"],
        "0.35×": ["59.3M", "60.1", "59.7", "62.2"],
        "Model Size": ["", "5×", "1×", "1×"]}.items()}
    assert resolutions.grid == {label: by_column(RESOLUTION_COLUMNS, *texts) for label, texts in {
        "224×224": ["301M", "72.1 ± 0.7", "73.0"],
        "192×192": ["221M", "71.0 ± 0.7", "72.2"],
        "160×160": ["154M", "69.5 ± 0.7", "71.1"],
        "128×128": ["99.1M", "66.8 ± 0.7", "68.8"],
        "96×96": ["56.3M", "62.6 ± 0.7", "63.9"],
        "Model Size": ["", "5×", "1×"]}.items()}
    assert table.missing == []
    for row in published.rows("RS-Nets", "Table 4"):
        assert row.footnote() in table.notes
    assert [line for line in table.notes if "Slimmable Neural Networks (ICLR 2019)" in line]


def test_latex_and_csv(capsys, mobilenet_store):
    latex = table(capsys, mobilenet_store, "latex")
    assert r"1.0$\times$ & 301M & 72.1 $\pm$ 0.7 & 70.5 & 71.5 \\" in latex
    assert r"224$\times$224 & 301M & 72.1 $\pm$ 0.7 & 73.0 \\" in latex
    assert r"\begin{tabular}{lrrrr}" in latex and r"\begin{tabular}{lrrr}" in latex
    assert "% S-MobileNetV2 [31]: top-1 % as published in" in latex
    csv = table(capsys, mobilenet_store, "csv")
    assert csv.splitlines()[0] == "table,panel,row,column,value,marked"
    frame = pd.read_csv(io.StringIO(csv), dtype=str).set_index(["row", "column"])
    assert set(frame["table"]) == {"rsnets_table4"}
    assert frame.loc[("0.35×", "US-MobileNetV2 [30]"), "value"] == "62.2"
    assert frame.loc[("0.8×", "S-MobileNetV2 [31]"), "value"] == "—"
    assert frame.loc[("160×160", "I-Nets-r"), "value"] == "69.5 ± 0.7"
    assert not frame.reset_index().duplicated(["panel", "row", "column"]).any(), "every cell once"


def test_builder_renders_every_format_from_the_fixture(mobilenet_store):
    runs = fetch_runs(MlflowClient(mobilenet_store), "rsnets_table4")
    built = rsnets_table4(runs, ["resolab run experiments/rsnets_table4.yaml"], digits=2)
    widths, resolutions = built.panels
    assert [panel.corner for panel in Cells.of(built).panels] == ["Width", "Resolution"]
    assert [c.text for c in widths.rows[2]] == ["0.65×", "162M", "68.00", "—", "68.3"]
    assert [c.text for c in resolutions.rows[2]] == ["160×160", "154M", "69.50 ± 0.71", "71.10"]  # seeds 69.0, 70.0
    assert "| 0.65× | 162M | 68.00 | — | 68.3 |" in table_render.render(built, "md")
    assert r"160$\times$160 & 154M & 69.50 $\pm$ 0.71 & 71.10 \\" in table_render.render(built, "latex")
    assert "160×160,RS-Net,71.10,0" in table_render.render(built, "csv")


def test_smoke_like_runs_give_the_1x_row_and_name_what_is_missing(capsys, empty_db, tmp_path):
    table = table_cells(capsys, store(empty_db, tmp_path, fill_tiny), "rsnets_table4")
    widths, resolutions = table.panel("left: adjusting the width"), table.panel("right: adjusting the resolution")
    assert widths.columns == ["MAdds", "I-Nets-w"]  # no published columns beside a tiny net
    assert widths.row_labels == ["1.0×", "Model Size"]  # no 0.8× row
    # the I-Net at 32 read twice: 40 + 32/2
    assert widths["1.0×", "I-Nets-w"] == "56.0"
    assert (resolutions["32×32", "I-Nets-r"], resolutions["32×32", "RS-Net"]) == ("56.0", "—")
    assert [line for line in table.notes if line.startswith("note: resnet_tiny has no width multiplier")]
    assert table.missing == ["missing: RS-Net resnet_tiny — run: resolab run experiments/rsnets_table4.yaml"]
    assert widths.row("Model Size") == by_column(["MAdds", "I-Nets-w"], "", "1×")
    assert resolutions.row("Model Size") == by_column(RESOLUTION_COLUMNS, "", "3×", "1×")


def test_empty_store_names_the_suite_to_run(capsys, empty_db, tmp_path):
    built = rsnets_table4(pd.DataFrame(), ["resolab run experiments/rsnets_table4.yaml"])
    assert built.panels == []
    assert any(line.startswith("missing: every model of this table") for line in built.notes)


def test_fig1_draws_the_published_width_switchable_models_at_their_madds(capsys, mobilenet_store, tmp_path):
    """RS-Nets Fig. 1 puts S-/US-MobileNetV2 (published) beside the RS-Net: a note names their source, and
    the figure is drawn with them."""
    table = table_cells(capsys, mobilenet_store, "fig1", "--suite", "rsnets_table4",
                        "--filter", "params.`model.width_mult` = '1.0'", "--out", str(tmp_path))
    assert [line for line in table.notes if line.startswith("US-MobileNetV2 [30]: top-1 % as published in")
            and "quoted by RS-Nets Table 4 and Fig. 1" in line]
    # the full-width model's MAdds (the filter keeps width 1.0)
    points = table.only_panel()
    assert (points["224×224", "MAdds"], points["224×224", "I-Nets"]) == ("301M", "72.1 ± 0.7")
    assert (tmp_path / "fig1_fig1_mobilenet_v2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
