"""RS-Nets Table 3 from a real MLflow SQLite store holding KNOWN runs: the paper's own ResNet-18 numbers
logged as quantized runs (W2/A32 on the plain tiny ResNet, W2/A2 on its pre-activation twin, one
network), so the rebuilt table must print the paper's rows, gains and storage; and RS-Nets Fig. 1
shows them as quantized points without mixing them into the full-precision models."""
from __future__ import annotations

import os
import shutil

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pandas as pd
import pytest
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from analysis.describe import describe
from analysis.matrix import COLUMNS, Matrix
from records.batch import log_batched
from analysis.report import log_matrix_metrics
from analysis.tables.rsnets_table3 import full_precision, network, quantized, settings
from analysis.tables.store import fetch_runs
from jobspec import Job, JobConfig, config_hash, flatten, param_value
from records.runs import job_tags
from tests.table_cells import by_column, table_cells

S = (224, 192, 160, 128, 96)
# RS-Nets Table 3, Quantized ResNet18: (top-1, top-5) per resolution.
PAPER = {
    (2, 32): {"inets": {224: (68.0, 88.0), 192: (66.4, 86.9), 160: (64.5, 85.5), 128: (61.5, 83.4), 96: (56.3, 79.4)},
              "rsnet": {224: (68.8, 88.4), 192: (67.6, 87.8), 160: (66.0, 86.5), 128: (63.1, 84.5), 96: (56.6, 79.9)}},
    (2, 2): {"inets": {224: (64.9, 86.0), 192: (63.1, 84.7), 160: (61.1, 83.3), 128: (58.1, 80.8), 96: (52.3, 76.4)},
             "rsnet": {224: (65.8, 86.4), 192: (64.8, 85.8), 160: (62.9, 84.2), 128: (59.3, 81.9), 96: (52.5, 76.7)}},
}
BACKBONE = {(2, 32): "resnet_tiny", (2, 2): "preact_resnet_tiny"}


def config(method, resolutions, bits=(32, 32), backbone="resnet_tiny") -> JobConfig:
    return JobConfig.parse({
        "model": {"backbone": backbone, "small_input": True, "weight_bits": bits[0], "act_bits": bits[1]},
        "method": {"name": method}, "data": {"resolutions": list(resolutions), "num_classes": 1000},
        "train": {"epochs": 2, "schedule": "step", "milestones": [1]}, "eval": {"test_resolutions": list(S)},
    }).validate()


def matrix(cells: dict[int, tuple[float, float]]) -> Matrix:
    records = [("fixed", r, t, top1 - abs(r - t) / 8, top5 - abs(r - t) / 8) for r, (top1, top5) in cells.items()
               for t in S]
    return Matrix(pd.DataFrame.from_records(records, columns=COLUMNS))


class Suite:
    def __init__(self, client: MlflowClient, name: str):
        self.client, self.name, self.clock = client, name, 1_700_000_000_000
        self.experiment_id = client.create_experiment(name, artifact_location=(
            os.path.dirname(client.tracking_uri[len("sqlite:///"):]) + f"/artifacts/{name}"))

    def job(self, cfg: JobConfig, m: Matrix, group: str) -> None:
        self.clock += 1000
        name = f"{cfg.method.name}-{cfg.model.backbone}-{cfg.data.resolutions}"
        tags = job_tags(self.name, Job(name=name, config=cfg, hash=config_hash(cfg), point={}, group=group), "test")
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags, start_time=self.clock).info.run_id
        log_batched(self.client, run_id, params=[Param(k, param_value(v)) for k, v in flatten(cfg).items()])
        log_matrix_metrics(self.client, run_id, m)
        self.client.set_terminated(run_id, status="FINISHED")


def fill(client: MlflowClient) -> None:
    s = Suite(client, "rsnets_table3")
    for bits, numbers in PAPER.items():
        for r in S:
            s.job(config("individual", [r], bits, BACKBONE[bits]), matrix({r: numbers["inets"][r]}), f"inets-{bits}")
        s.job(config("rsnet", S, bits, BACKBONE[bits]), matrix(numbers["rsnet"]), f"rsnet-{bits}")
    # A full-precision RS-Net (RS-Nets Table 2) of the same network: Fig. 1 must keep it apart.
    Suite(client, "rsnets_table2").job(config("rsnet", S), matrix({r: (70.0, 89.0) for r in S}), "fp")


@pytest.fixture(scope="module")
def store(empty_db, tmp_path_factory) -> str:
    """Filled once for this module; its tests only read it."""
    path = tmp_path_factory.mktemp("rsnets_table3") / "mlflow.db"
    shutil.copy(empty_db, path)
    fill(MlflowClient(f"sqlite:///{path}"))
    return f"sqlite:///{path}"


def test_networks_merge_a_backbone_and_its_preact_twin():
    assert network("preact_resnet18") == "resnet18" and network("resnet50") == "resnet50"


TABLE3_COLUMNS = ["MAdds", "W2/A32 I-Nets (base)", "W2/A32 RS-Net", "W2/A2 I-Nets (base)", "W2/A2 RS-Net"]


def test_cells_are_the_papers_table(capsys, store):
    table = table_cells(capsys, store, "rsnets_table3")
    panel = table.panel("Quantized resnet_tiny (W2/A32 on resnet_tiny, W2/A2 on preact_resnet_tiny)")
    assert panel.columns == TABLE3_COLUMNS
    # The paper's rows, gains included (RS-Net top-1 minus the I-Net's at the same resolution).
    accuracies = {label: {c: text for c, text in panel.row(label).items() if c != "MAdds"}
                  for label in ("224×224", "192×192", "96×96")}
    assert accuracies == {
        "224×224": by_column(TABLE3_COLUMNS[1:], "68.0 / 88.0", "68.8 / 88.4 (+0.8)", "64.9 / 86.0", "65.8 / 86.4 (+0.9)"),
        "192×192": by_column(TABLE3_COLUMNS[1:], "66.4 / 86.9", "67.6 / 87.8 (+1.2)", "63.1 / 84.7", "64.8 / 85.8 (+1.7)"),
        "96×96": by_column(TABLE3_COLUMNS[1:], "56.3 / 79.4", "56.6 / 79.9 (+0.3)", "52.3 / 76.4", "52.5 / 76.7 (+0.2)")}
    # Storage: five 2-bit I-Nets need log2(5 * 4) = 4.3 bits per conv weight, one RS-Net 2 (§4.2, footnote 4).
    assert panel.row("Storage (bits / conv weight)") == by_column(TABLE3_COLUMNS, "", "4.3", "2.0", "4.3", "2.0")
    sizes = {}
    for bits, backbone in BACKBONE.items():
        for method, resolutions in (("individual", S), ("rsnet", S)):
            cfg = JobConfig.parse({"model": {"backbone": backbone, "small_input": True, "weight_bits": bits[0],
                                             "act_bits": bits[1]}, "method": {"name": method},
                                   "data": {"resolutions": list(resolutions)}})
            sizes[(bits, method)] = describe(cfg, 1000)["size_MB"]
    assert panel.row("Model size (MB)") == by_column(
        TABLE3_COLUMNS, "", *(f"{sizes[(b, m)]:.1f}" for b in BACKBONE for m in ("individual", "rsnet")))
    assert table.notes == []


def test_fig1_shows_quantized_points_apart_from_the_full_precision_models(capsys, store):
    table = table_cells(capsys, store, "fig1")
    # The full-precision RS-Net is the RS-Net of the Table 2 panel; its I-Nets are missing, not the 2-bit ones.
    full = table.panel("resnet_tiny — top-1 % at the training resolutions")
    assert full.row("224×224") == by_column(["MAdds", "I-Nets", "Parallel", "RS-Net", "SAN"],
                                            full["224×224", "MAdds"], "—", "—", "70.0", "—")
    assert [line for line in table.missing if line.startswith("missing: I-Nets resnet_tiny")]
    quantized_points = table.panel("quantized")
    columns = ["MAdds", "I-Nets W2/A32", "RS-Net W2/A32", "I-Nets W2/A2", "RS-Net W2/A2"]
    assert quantized_points.columns == columns
    assert quantized_points.row("224×224") == by_column(columns, full["224×224", "MAdds"], "68.0", "68.8", "64.9", "65.8")


def test_split_of_runs_by_precision(store):
    runs = pd.concat([fetch_runs(MlflowClient(store), s) for s in ("rsnets_table3", "rsnets_table2")])
    from analysis.tables.runs import prepare_runs
    runs = prepare_runs(runs)
    assert len(full_precision(runs)) == 1 and len(quantized(runs)) == 12
    assert settings(runs, "resnet_tiny") == [("resnet_tiny", (2, 32)), ("preact_resnet_tiny", (2, 2))]


def test_w2a32_jobs_start_every_residual_block_at_zero_gamma():
    """LQ-Nets' resnet_model.py and the RS-Nets reference start the last BN of every "resnet" block at
    gamma = 0 (W2/A32) and of no "preresnet" block (W2/A2): the suite's real jobs, built as they train."""
    import torch
    from torchvision.models.resnet import BasicBlock, Bottleneck

    from backbones.quantized import QuantizedConv2d
    from jobspec import load_suite
    from methods.base import build_method

    seen = set()
    for job in load_suite("experiments/rsnets_table3.yaml").jobs:
        cfg = job.config
        key = (cfg.model.backbone, cfg.method.name)
        if key in seen or cfg.method.name == "individual" and cfg.data.resolutions != [224]:
            continue
        seen.add(key)
        torch.manual_seed(0)
        net = build_method(cfg.method, cfg.model, cfg.data.resolutions).build(num_classes=10)
        assert any(isinstance(m, QuantizedConv2d) for m in net.modules())
        last = [b.bn2 if isinstance(b, BasicBlock) else b.bn3 for b in net.modules()
                if isinstance(b, (BasicBlock, Bottleneck))]
        if cfg.model.act_bits == 32:  # W2/A32: resnet18 (8 blocks) / resnet50 (16), every BN slot at 0
            assert cfg.model.zero_init_residual is True
            assert len(last) == {"resnet18": 8, "resnet50": 16}[cfg.model.backbone]
            assert all(torch.count_nonzero(bn.weight) == 0 for bn in last)
            others = [m.weight for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)
                      and all(m is not bn for bn in last)]
            assert others and all(bool((w == 1).all()) for w in others)
        else:  # W2/A2: pre-activation blocks (no torchvision block), gamma = 1 everywhere
            assert last == []
            assert all(bool((m.weight == 1).all()) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert seen == {(b, m) for b in ("resnet18", "resnet50", "preact_resnet18", "preact_resnet50")
                    for m in ("individual", "rsnet")}
