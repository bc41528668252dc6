"""The suite files in experiments/: they load, expand to the jobs each paper table needs, carry the
switches that make each table's comparison, say how to run them, and shrink to a tiny smoke run that
keeps those switches. Fast: nothing trains."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis.tables.registry import TABLES

from orchestrator.cli.main import main as cli_main
from jobspec import ConfigError, load_suite

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"

S = [224, 192, 160, 128, 96]  # both papers' training resolutions
SAN_TABLE1_TESTS = [256, 224, 208, 192, 176, 160, 144, 128, 112, 96, 64]
SAN_TABLE6_TRAIN = [384, 320, 256, 224, 192]
SAN_TABLE6_TESTS = [384, 320, 256, 224, 208, 192, 176, 160, 144, 128, 112, 96, 64]
SAN_TABLE7_TESTS = [480, 448, 384, 288, 224, 128, 64]
DENSE_TESTS = list(range(224, 95, -16))  # RS-Nets Fig. 4 right: 224, 208, ..., 96
SAN_DEFAULTS = {"bn": "private", "scale_distill": True, "meta_hidden": 0, "convs": "meta"}
RECIPES = {  # (lr, weight decay, epochs) of both papers
    "resnet18": (0.1, 1e-4, 120), "resnet50": (0.1, 1e-4, 120), "mobilenet_v2": (0.05, 4e-5, 150),
    "preact_resnet18": (0.1, 1e-4, 120), "preact_resnet50": (0.1, 1e-4, 120)}

# Jobs each table needs; other code (analysis/make_tables.py) reads the suites by these names.
EXPECTED_JOBS = {
    "san_table1": 18,     # 3 backbones x (5 I-Nets + SAN)
    "san_table2": 1,      # R18 SAN with BN calibration
    "san_table3": 2,      # MobileNetV2 SAN w/o SD; w/o SD + shared BN
    "san_table4": 1,      # R18 privatized convs + SD
    "san_table5": 3,      # R18 SAN meta_hidden 0 / 8 / 16
    "san_table6": 6,      # R18 5 I-Nets + SAN at 384...192
    "san_table7": 1,      # R50 SAN
    "rsnets_table2": 21,  # 3 backbones x (5 I-Nets + parallel + RS-Net)
    "rsnets_table3": 24,  # 2 backbones x 2 bit settings (W2/A32, W2/A2) x (5 I-Nets + RS-Net)
    "rsnets_table4": 10,  # MNV2 5 I-Nets-r + RS-Net (= rsnets_table2's) + 4 I-Nets-w at 224
    "rsnets_fig4": 14,    # MNV2 (parallel shared/private BN + 5 I-Nets + RS-Net) + R18 (5 I-Nets + RS-Net)
    "rsnets_table5": 4,   # R18 RS-Net x 4 distillation variants
    "rsnets_table6": 12,  # 2 multi-resolution + 5 single-resolution multi-crop + 5 I-Nets (= single-res single-crop)
    "rsnets_fig3": 3,     # R18 I-224, I-96, parallel {224, 96}, evaluated with eval.gap_cdf
    "rsnets_fig5": 12,    # R18 parallel on 4 pairs + 3 larger sets + 5 I-Nets
    "quickstart": 7,      # 4 I-Nets + parallel + RS-Net + SAN
    "search_quickstart": 28,  # 4 samples x the quickstart's 7 jobs
}
IMAGENET_SUITES = sorted(set(EXPECTED_JOBS) - {"quickstart", "search_quickstart"})
SUITE_FILES = sorted(p.name for p in EXPERIMENTS.glob("*.yaml"))


def path_of(stem: str) -> Path:
    return EXPERIMENTS / f"{stem}.yaml"


_cache: dict = {}


def suite(stem: str, smoke: bool = False):
    key = (stem, smoke)
    if key not in _cache:
        _cache[key] = load_suite(path_of(stem), smoke=smoke)
    return _cache[key]


def jobs(stem: str, smoke: bool = False, **where):
    """Configs of the suite's jobs whose dotted keys equal ``where`` (``method__name="san"``)."""
    out = []
    for job in suite(stem, smoke).jobs:
        cfg = job.config
        if all(_get(cfg, k.replace("__", ".")) == v for k, v in where.items()):
            out.append(cfg)
    return out


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def resolution_kind(resolutions: list[int]) -> str:
    if len(resolutions) == 1:
        return "individual"
    return "single" if len(set(resolutions)) == 1 else "multi"


def switches(cfg) -> tuple:
    """What a table compares: the method and its ablation switches, the crop, the eval modes and the
    structure of the resolutions; not the sizes."""
    m = cfg.method
    per_method = {
        "individual": (),
        "parallel": (m.bn,),
        "rsnet": (m.bn, m.distill),
        "san": (m.bn, m.scale_distill, m.meta_hidden, m.convs, cfg.eval.calibrate),
    }[m.name]
    return (cfg.model.small_input if cfg.model.backbone == "resnet_tiny" else None, m.name, *per_method,
            cfg.data.crop, resolution_kind(cfg.data.resolutions), cfg.model.weight_bits, cfg.model.act_bits)


def assert_inet_set(stem: str, backbone: str, resolutions: list[int], **where):
    rows = jobs(stem, method__name="individual", model__backbone=backbone, **where)
    assert sorted((c.data.resolutions for c in rows), reverse=True) == [[r] for r in resolutions], stem
    assert len({tuple(c.eval.test_resolutions) for c in rows}) == 1, "the rows of an I-Net set share their columns"


# ---------------------------------------------------------------- every file


def test_every_suite_file_is_expected_and_every_table_has_a_file():
    assert SUITE_FILES == sorted(f"{stem}.yaml" for stem in EXPECTED_JOBS)
    assert (EXPERIMENTS / "base" / "imagenet.yaml").is_file()
    assert (EXPERIMENTS / "base" / "imagenet_mobilenet.yaml").is_file()


@pytest.mark.parametrize("base", ["imagenet.yaml", "imagenet_mobilenet.yaml"])
def test_base_files_are_not_suites(base):
    with pytest.raises(ConfigError, match="no 'name'"):
        load_suite(EXPERIMENTS / "base" / base)


@pytest.mark.parametrize("stem", sorted(EXPECTED_JOBS))
def test_suite_loads_with_the_jobs_its_table_needs(stem):
    s = suite(stem)
    assert s.name == stem, "the suite name is the file name (make_tables.py reads the suite by name)"
    assert len(s.jobs) == EXPECTED_JOBS[stem], [j.name for j in s.jobs]
    assert len({j.name for j in s.jobs}) == len(s.jobs) and len({j.hash for j in s.jobs}) == len(s.jobs)
    assert s.description


@pytest.mark.parametrize("stem", sorted(EXPECTED_JOBS))
def test_header_says_what_it_reproduces_and_how_to_run_it(stem):
    header = suite(stem).header
    assert f"resolab run experiments/{stem}.yaml" in header
    # the table named after the suite, or else the one that reads it by default
    table = stem if stem in TABLES else next(spec.name for spec in TABLES.values() if spec.suites == (stem,))
    assert f"python analysis/make_tables.py {table}" in header
    assert f"resolab run experiments/{stem}.yaml --smoke" in header
    stated = re.search(r"Jobs:\s+(\d+)", header)
    assert stated and int(stated.group(1)) == EXPECTED_JOBS[stem], "the header's job count is the suite's"
    assert "Runtime" in header
    if stem in IMAGENET_SUITES:
        paper = "SAN Table" if stem.startswith("san_") else "RS-Nets"
        assert paper in header.splitlines()[0]
        assert "estimate" in header


@pytest.mark.parametrize("smoke", [False, True], ids=["real", "smoke"])
@pytest.mark.parametrize("stem", sorted(EXPECTED_JOBS))
def test_dry_run_lists_every_job(stem, smoke, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    argv = ["run", f"experiments/{stem}.yaml", "--dry-run"] + (["--smoke"] if smoke else [])
    code = cli_main(argv)
    out, err = capsys.readouterr()
    if smoke or stem in ("quickstart", "search_quickstart"):  # synthetic data: nothing to check
        assert code == 0
    else:  # the job table, then the data check: this machine has no ImageNet at the suites' data.root
        assert code == 2 and "dataset root not found: /data/imagenet" in err and "Fix:" in err
    expected = suite(stem, smoke).jobs
    title = out.splitlines()[0]
    assert title.startswith(f"{stem}: {len(expected)} job")
    table = out.split("\n--smoke:")[0].split("\n\n")[0]  # the job table, not the search lines under it
    listed = [line.split()[0] for line in table.splitlines()[3:] if line.strip()]
    assert listed == [j.name for j in expected]
    assert ("--smoke:" in out) == smoke
    for job in expected:
        assert job.hash in out


# ---------------------------------------------------------------- the ImageNet setting


@pytest.mark.parametrize("stem", IMAGENET_SUITES)
def test_imagenet_suites_use_the_papers_optimisation(stem):
    for cfg in jobs(stem):
        lr, wd, epochs = RECIPES[cfg.model.backbone]
        assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.epochs) == (lr, wd, epochs), cfg.model.backbone
        assert (cfg.train.batch_size, cfg.train.momentum, cfg.train.warmup_epochs) == (256, 0.9, 0)
        assert cfg.data.dataset == "imagefolder" and cfg.data.root
        assert cfg.model.small_input is False
        assert cfg.resources.gpus_per_worker >= 1 and cfg.resources.workers >= 1
        assert cfg.data.resolutions == sorted(cfg.data.resolutions, reverse=True)
        # The GPU defaults, on purpose not the papers' fp32 (base/imagenet.yaml says why).
        assert (cfg.train.precision, cfg.train.channels_last) == ("bf16", True)


def test_data_root_can_be_overridden_from_the_command_line():
    s = load_suite(path_of("san_table4"), ["data.root=/elsewhere/imagenet"])
    assert s.jobs[0].config.data.root == "/elsewhere/imagenet"


# ---------------------------------------------------------------- SAN tables


def test_san_table1_inets_and_san_on_three_backbones():
    for backbone in ("resnet18", "mobilenet_v2", "resnet50"):
        assert_inet_set("san_table1", backbone, S)
        (san,) = jobs("san_table1", method__name="san", model__backbone=backbone)
        assert {k: getattr(san.method, k) for k in SAN_DEFAULTS} == SAN_DEFAULTS
        assert san.data.resolutions == S
    assert all(c.eval.test_resolutions == SAN_TABLE1_TESTS for c in jobs("san_table1"))


def test_san_table2_calibrates_and_tests_between_training_resolutions():
    (san,) = jobs("san_table2")
    assert san.method.name == "san" and san.model.backbone == "resnet18" and san.eval.calibrate
    assert {k: getattr(san.method, k) for k in SAN_DEFAULTS} == SAN_DEFAULTS
    assert {208, 176, 144, 112} <= set(san.eval.test_resolutions)
    (smoke,) = jobs("san_table2", smoke=True)
    train = smoke.data.resolutions
    between = [t for t in smoke.eval.test_resolutions if min(train) < t < max(train) and t not in train]
    assert between, "the smoke table needs interpolated test resolutions too"


def test_san_table3_without_scale_distillation_private_and_shared_bn():
    rows = jobs("san_table3")
    assert {c.method.bn for c in rows} == {"private", "shared"}
    for c in rows:
        assert (c.method.name, c.model.backbone, c.method.scale_distill) == ("san", "mobilenet_v2", False)
        assert (c.method.meta_hidden, c.method.convs) == (0, "meta")


def test_san_table4_privatized_convs_with_scale_distillation():
    (c,) = jobs("san_table4")
    assert (c.method.name, c.model.backbone, c.method.convs) == ("san", "resnet18", "private")
    assert c.method.scale_distill and c.method.bn == "private"


def test_san_table5_linear_and_mlp_meta_networks():
    rows = jobs("san_table5")
    assert sorted(c.method.meta_hidden for c in rows) == [0, 8, 16]
    for c in rows:
        assert (c.method.name, c.model.backbone) == ("san", "resnet18")
        assert (c.method.bn, c.method.scale_distill, c.method.convs) == ("private", True, "meta")


def test_san_table6_large_training_resolutions():
    assert_inet_set("san_table6", "resnet18", SAN_TABLE6_TRAIN)
    (san,) = jobs("san_table6", method__name="san")
    assert san.data.resolutions == SAN_TABLE6_TRAIN
    assert {k: getattr(san.method, k) for k in SAN_DEFAULTS} == SAN_DEFAULTS
    assert all(c.eval.test_resolutions == SAN_TABLE6_TESTS for c in jobs("san_table6"))


def test_san_table7_resnet50_at_fixres_test_resolutions():
    (c,) = jobs("san_table7")
    assert (c.method.name, c.model.backbone, c.data.resolutions) == ("san", "resnet50", S)
    assert c.eval.test_resolutions == SAN_TABLE7_TESTS
    assert c.tag != "fixres", "runs tagged fixres are FixRes rows in make_tables"


def test_one_model_in_several_san_tables_is_one_config():
    """The R18 SAN of Tables 1, 2 and 5 (linear) is the same job: same hash."""
    hashes = {j.hash for stem, where in [("san_table1", {"model.backbone": "resnet18"}), ("san_table2", {}),
                                          ("san_table5", {"method.meta_hidden": 0})]
              for j in suite(stem).jobs
              if j.config.method.name == "san" and all(_get(j.config, k) == v for k, v in where.items())}
    assert len(hashes) == 1


# ---------------------------------------------------------------- RS-Nets tables


def test_rsnets_table3_quantized_inets_and_rsnet_with_lqnets_schedule():
    settings = {"resnet18": (2, 32), "preact_resnet18": (2, 2), "resnet50": (2, 32), "preact_resnet50": (2, 2)}
    for backbone, (weight_bits, act_bits) in settings.items():
        assert_inet_set("rsnets_table3", backbone, S)
        (rs,) = jobs("rsnets_table3", method__name="rsnet", model__backbone=backbone)
        assert (rs.method.bn, rs.method.distill, rs.data.crop, rs.data.resolutions) == ("private", "full", "single", S)
        for cfg in jobs("rsnets_table3", model__backbone=backbone):
            assert (cfg.model.weight_bits, cfg.model.act_bits, cfg.model.act_basis) == (weight_bits, act_bits, "shared")
    for cfg in jobs("rsnets_table3"):  # LQ-Nets' schedule (RS-Nets §4.1)
        assert (cfg.train.schedule, cfg.train.milestones, cfg.train.gamma) == ("step", [30, 60, 85, 95, 105], 0.1)
    smoke = jobs("rsnets_table3", smoke=True)
    assert {c.model.backbone for c in smoke} == {"preact_resnet_tiny"}
    assert sorted({(c.model.weight_bits, c.model.act_bits) for c in smoke}) == [(2, 2), (2, 32)]


def test_rsnets_table2_inets_parallel_rsnet_on_three_backbones():
    for backbone in ("resnet18", "resnet50", "mobilenet_v2"):
        assert_inet_set("rsnets_table2", backbone, S)
        (par,) = jobs("rsnets_table2", method__name="parallel", model__backbone=backbone)
        (rs,) = jobs("rsnets_table2", method__name="rsnet", model__backbone=backbone)
        assert par.method.bn == "private" and par.data.resolutions == S
        assert (rs.method.bn, rs.method.distill, rs.data.crop, rs.data.resolutions) == ("private", "full", "single", S)


def test_rsnets_fig4_bn_ablation_and_dense_test_resolutions():
    mnv2 = {"model__backbone": "mobilenet_v2"}
    assert {c.method.bn for c in jobs("rsnets_fig4", method__name="parallel", **mnv2)} == {"shared", "private"}
    assert len(jobs("rsnets_fig4", method__name="parallel", **mnv2)) == 2
    assert_inet_set("rsnets_fig4", "mobilenet_v2", S)
    (rs,) = jobs("rsnets_fig4", method__name="rsnet", **mnv2)
    assert (rs.method.bn, rs.method.distill) == ("private", "full")
    assert_inet_set("rsnets_fig4", "resnet18", S)
    (rs18,) = jobs("rsnets_fig4", method__name="rsnet", model__backbone="resnet18")
    assert (rs18.method.bn, rs18.method.distill, rs18.data.crop) == ("private", "full", "single")
    for c in jobs("rsnets_fig4", model__backbone="resnet18"):
        assert c.eval.test_resolutions == DENSE_TESTS
    assert {c.model.backbone for c in jobs("rsnets_fig4")} == {"mobilenet_v2", "resnet18"}


def test_rsnets_table5_four_distillation_variants():
    rows = jobs("rsnets_table5")
    assert sorted(c.method.distill for c in rows) == sorted(["full", "vanilla", "from_models", "from_largest"])
    for c in rows:
        assert (c.method.name, c.model.backbone, c.method.bn, c.data.crop, c.data.resolutions) == (
            "rsnet", "resnet18", "private", "single", S)


def test_rsnets_table6_multi_and_single_resolution_by_crop():
    rows = jobs("rsnets_table6", method__name="rsnet")
    assert all((c.model.backbone, c.method.distill) == ("resnet18", "full") for c in rows)
    found = {(tuple(c.data.resolutions), c.data.crop) for c in rows}
    expected = {(tuple(S), crop) for crop in ("single", "multi")} | {((r,) * 5, "multi") for r in S}
    assert found == expected  # single-resolution single-crop is not trained: it is an I-Net
    inets = {j.hash for j in suite("rsnets_table6").jobs if j.config.method.name == "individual"}
    assert len(inets) == 5 and inets <= {j.hash for j in suite("rsnets_table2").jobs}  # Table 2's I-Nets
    smoke = jobs("rsnets_table6", smoke=True, method__name="rsnet")
    assert {(resolution_kind(c.data.resolutions), c.data.crop) for c in smoke} == {
        ("multi", "single"), ("multi", "multi"), ("single", "multi")}


def test_rsnets_fig5_pairs_and_sets_reuse_table2_models():
    rows = jobs("rsnets_fig5", method__name="parallel")
    assert {tuple(c.data.resolutions) for c in rows} == {(224, r) for r in S[1:]} | {tuple(S[:k]) for k in (3, 4, 5)}
    assert all((c.method.bn, c.data.crop) == ("private", "single") for c in rows)
    table2 = {j.hash for j in suite("rsnets_table2").jobs}
    shared = {j.hash for j in suite("rsnets_fig5").jobs} & table2
    assert len(shared) == 6  # the five-resolution parallel model and the 5 I-Nets


def test_rsnets_fig3_only_evaluates_models_of_other_suites():
    from jobspec.hashing import training_hash

    trained = {training_hash(j.config) for stem in ("rsnets_table2", "rsnets_fig5") for j in suite(stem).jobs}
    fig3 = suite("rsnets_fig3").jobs
    assert all(j.config.eval.gap_cdf for j in fig3)
    assert {training_hash(j.config) for j in fig3} <= trained


def test_one_model_in_several_rsnets_tables_is_one_config():
    """The R18 RS-Net (full MRED, single crop) of Tables 2, 5 and 6 is the same job: same hash."""
    def rsnet18(stem):
        return {j.hash for j in suite(stem).jobs if j.config.method.name == "rsnet"
                and j.config.model.backbone == "resnet18" and j.config.method.distill == "full"
                and j.config.data.crop == "single" and j.config.data.resolutions == S}
    assert len(rsnet18("rsnets_table2") | rsnet18("rsnets_table5") | rsnet18("rsnets_table6")) == 1


# ---------------------------------------------------------------- quickstart


def test_quickstart_is_tiny_cpu_and_has_every_method():
    rows = jobs("quickstart")
    assert sorted(c.method.name for c in rows) == ["individual"] * 4 + ["parallel", "rsnet", "san"]
    for c in rows:
        assert (c.model.backbone, c.model.small_input, c.data.dataset) == ("resnet_tiny", True, "synthetic")
        assert (c.resources.workers, c.resources.cpus_per_worker, c.resources.gpus_per_worker) == (1, 1, 0)
        assert max(c.data.resolutions) <= 64
    (san,) = jobs("quickstart", method__name="san")
    assert {k: getattr(san.method, k) for k in SAN_DEFAULTS} == SAN_DEFAULTS
    (rs,) = jobs("quickstart", method__name="rsnet")
    assert (rs.method.bn, rs.method.distill, rs.data.crop) == ("private", "full", "single")


# The quickstart's training work, in input pixels through the network: the settings that finish it in
# about 10 minutes on 2 CPU cores (8 epochs of 2000 images at 48 40 32 24 px, seven jobs).
QUICKSTART_PIXELS = 8 * 2000 * 4 * (48**2 + 40**2 + 32**2 + 24**2)


def test_quickstart_training_work_stays_within_its_ten_minute_budget():
    pixels = 0
    for c in jobs("quickstart"):
        per_epoch = c.data.synthetic.num_train
        if c.train.max_steps_per_epoch is not None:
            per_epoch = min(per_epoch, c.train.max_steps_per_epoch * c.train.batch_size)
        pixels += c.train.epochs * per_epoch * sum(r * r for r in c.data.resolutions)
    assert pixels <= QUICKSTART_PIXELS, f"{pixels / QUICKSTART_PIXELS:.2f} x the work that takes ~10 min on 2 cores"


# ---------------------------------------------------------------- smoke versions


@pytest.mark.parametrize("stem", sorted(EXPECTED_JOBS))
def test_smoke_keeps_the_switches_and_makes_every_job_tiny(stem):
    real, smoke = suite(stem).jobs, suite(stem, smoke=True).jobs
    assert 1 <= len(smoke) <= len(real)

    def comparable(jobs_):  # small_input is part of "tiny", not a switch of the table
        return {switches(j.config)[1:] for j in jobs_}
    assert comparable(smoke) == comparable(real)
    for job in smoke:
        c = job.config
        # The pre-activation twin where the table quantizes activations (resnet_tiny has no quantizers for them).
        tiny = "preact_resnet_tiny" if stem == "rsnets_table3" else "resnet_tiny"
        assert (c.model.backbone, c.model.small_input, c.data.dataset) == (tiny, True, "synthetic")
        assert c.data.root is None
        assert c.train.epochs == 1 and c.train.max_steps_per_epoch is not None
        assert max(c.data.resolutions) <= 64 and max(c.eval.test_resolutions) <= 64
        assert (c.resources.workers, c.resources.gpus_per_worker) == (1, 0)
        assert (c.train.precision, c.train.channels_last) == ("fp32", False), "a smoke job runs on CPU"
        assert c.resources.cpus_per_worker <= 1, "a smoke job must fit on a 2-core laptop"
        assert c.eval.max_batches is not None
