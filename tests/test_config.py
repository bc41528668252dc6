"""Suite loading: extends, overrides, strict types, validation, expansion, hashing, smoke."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobspec import BUILTIN_SMOKE, ConfigError, JobConfig, config_hash, expand_jobs, flatten, job_from_dict, load_suite

REPO = Path(__file__).resolve().parents[1]
SAN_TABLE1 = (256, 224, 208, 192, 176, 160, 144, 128, 112, 96, 64)


def write(root: Path, relpath: str, text: str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def suite_file(tmp_path: Path, body: str, name: str = "suite.yaml") -> Path:
    return write(tmp_path, name, "name: test_suite\n" + textwrap.dedent(body))


def load_error(path, overrides=(), smoke=False) -> str:
    with pytest.raises(ConfigError) as info:
        load_suite(path, overrides, smoke=smoke)
    return str(info.value)


# ---------------------------------------------------------------- extends


def test_extends_chain_deep_merges_mappings_and_replaces_lists(tmp_path, monkeypatch):
    write(tmp_path, "bases/root.yaml", """
        name: from_root
        description: root description
        job:
          data: {resolutions: [224, 192, 160, 128, 96], crop: multi}
          train: {epochs: 120, lr: 0.2, seed: 3}
        grid:
          method.distill: [full, vanilla]
        cases:
          - {method.name: parallel}
        smoke:
          train.batch_size: 8
          eval.batch_size: 8
        """)
    write(tmp_path, "bases/mid.yaml", """
        extends: root.yaml
        job:
          data: {resolutions: [128, 96]}
          train: {epochs: 90}
        grid:
          train.seed: [0, 1]
        smoke:
          eval.batch_size: 4
        """)
    path = write(tmp_path, "suites/leaf.yaml", """
        extends: ../bases/mid.yaml
        job:
          model: {backbone: resnet18}
        cases:
          - {method.name: rsnet}
        """)
    monkeypatch.chdir(tmp_path / "bases")  # extends paths are relative to the file, not the cwd
    suite = load_suite(path)

    assert suite.name == "from_root" and suite.description == "root description"
    cfg = suite.jobs[0].config
    assert cfg.model.backbone == "resnet18"
    assert cfg.data.resolutions == [128, 96]  # replaced, not merged element-wise
    assert cfg.data.crop == "multi"  # sibling key of a merged mapping survives
    assert (cfg.train.epochs, cfg.train.lr) == (90, 0.2)
    # grid axes merge key-wise; the child's cases replace the parent's
    assert {(j.config.method.distill, j.config.train.seed) for j in suite.jobs} == {
        (d, s) for d in ("full", "vanilla") for s in (0, 1)}
    assert {j.config.method.name for j in suite.jobs} == {"rsnet"}
    # smoke blocks merge key-wise too
    smoke = load_suite(path, smoke=True).jobs[0].config
    assert (smoke.train.batch_size, smoke.eval.batch_size) == (8, 4)


def test_extends_list_applies_bases_in_order(tmp_path):
    write(tmp_path, "a.yaml", "job: {train: {epochs: 5, lr: 0.3}}\n")
    write(tmp_path, "b.yaml", "job: {train: {epochs: 7}}\n")
    path = suite_file(tmp_path, "extends: [a.yaml, b.yaml]\n")
    cfg = load_suite(path).jobs[0].config
    assert (cfg.train.epochs, cfg.train.lr) == (7, 0.3)


def test_extends_missing_file_names_both_files(tmp_path):
    path = suite_file(tmp_path, "extends: bases/nowhere.yaml\n")
    message = load_error(path)
    assert "nowhere.yaml" in message and str(path) in message


def test_extends_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    path = suite_file(tmp_path, "extends: a.yaml\n")
    assert "cycle" in load_error(path)


def test_name_is_required_unless_inherited(tmp_path):
    path = write(tmp_path, "s.yaml", "job: {train: {epochs: 1}}\n")
    assert "'name'" in load_error(path)


# ---------------------------------------------------------------- file-level errors


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = suite_file(tmp_path, "job:\n  train: {epochs: 1\n  model: x\n")
    message = load_error(path)
    assert re.search(rf"{re.escape(str(path))}:\d+", message)


def test_key_given_twice_in_yaml_is_an_error(tmp_path):
    path = suite_file(tmp_path, "grid:\n  train.seed: [0]\n  train.seed: [1]\n")
    assert "twice" in load_error(path)


def test_unknown_top_level_key_suggests_closest(tmp_path):
    path = suite_file(tmp_path, "gird:\n  train.seed: [0, 1]\n")
    message = load_error(path)
    assert "'gird'" in message and "did you mean 'grid'" in message


def test_unknown_nested_key_suggests_closest(tmp_path):
    path = suite_file(tmp_path, "job:\n  train: {epoch: 3}\n")
    assert "unknown key 'train.epoch' — did you mean 'train.epochs'?" in load_error(path)


@pytest.mark.parametrize("block, bad, good", [
    ("grid:\n  method.distil: [full]\n", "method.distil", "method.distill"),
    ("cases:\n  - {train.sed: 1}\n", "train.sed", "train.seed"),
    ("smoke:\n  train.batchsize: 2\n", "train.batchsize", "train.batch_size"),
])
def test_unknown_grid_case_and_smoke_keys_suggest_closest(tmp_path, block, bad, good):
    message = load_error(suite_file(tmp_path, block), smoke=True)
    assert f"'{bad}'" in message and f"did you mean '{good}'" in message


# ---------------------------------------------------------------- overrides


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = suite_file(tmp_path, "job: {method: {name: rsnet}}\n")
    cfg = load_suite(path, ["train.lr=0.05", "data.resolutions=[64,32]", "method.name=san",
                            "train.epochs=2", "train.max_steps_per_epoch=null"]).jobs[0].config
    assert cfg.train.lr == 0.05 and isinstance(cfg.train.lr, float)
    assert cfg.data.resolutions == [64, 32]
    assert cfg.method.name == "san"
    assert cfg.train.epochs == 2 and cfg.train.max_steps_per_epoch is None


def test_override_of_grid_axis_replaces_the_axis(tmp_path):
    path = suite_file(tmp_path, "grid:\n  train.seed: [0, 1, 2]\n  method.distill: [full, vanilla]\n")
    suite = load_suite(path, ["train.seed=5"])
    assert len(suite.jobs) == 2
    assert {j.config.train.seed for j in suite.jobs} == {5}
    assert all(set(j.point) == {"method.distill"} for j in suite.jobs)


def test_override_removes_the_key_from_cases(tmp_path):
    path = suite_file(tmp_path, "cases:\n  - {train.lr: 0.1}\n  - {train.lr: 0.2}\n")
    suite = load_suite(path, ["train.lr=0.3"])
    assert [j.config.train.lr for j in suite.jobs] == [0.3]


@pytest.mark.parametrize("override, expected", [
    ("train.epochs", "key=value"),
    ("train.epoch=3", "did you mean 'train.epochs'"),
    ("train.epochs=ten", "train.epochs"),
])
def test_bad_overrides(tmp_path, override, expected):
    assert expected in load_error(suite_file(tmp_path, ""), [override])


# ---------------------------------------------------------------- strict types


@pytest.mark.parametrize("job, key, fragment", [
    ({"train": {"epochs": "ten"}}, "train.epochs", "'ten'"),
    ({"train": {"epochs": True}}, "train.epochs", "true"),
    ({"train": {"epochs": 2.5}}, "train.epochs", "2.5"),
    ({"data": {"resolutions": 224}}, "data.resolutions", "224"),
    ({"data": {"resolutions": [224, "a"]}}, "data.resolutions", "'a'"),
    ({"train": {"lr": None}}, "train.lr", "null"),
    ({"train": {"lr": "fast"}}, "train.lr", "'fast'"),
    ({"model": {"small_input": 1}}, "model.small_input", "1"),
    ({"method": {"name": 3}}, "method.name", "3"),
    ({"train": 5}, "train", "5"),
])
def test_wrong_types_name_key_expected_type_and_value(job, key, fragment):
    with pytest.raises(ConfigError) as info:
        job_from_dict(job)
    message = str(info.value)
    assert message.startswith(f"{key}:") and "expected" in message and fragment in message


def test_lenient_but_lossless_numbers():
    cfg = job_from_dict({"train": {"epochs": 2.0, "lr": 1, "divergence_threshold": "1e4",
                                   "max_steps_per_epoch": None}})
    assert cfg.train.epochs == 2 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.divergence_threshold == 1e4  # PyYAML reads 1e4 as a string
    assert config_hash(cfg) == config_hash(job_from_dict({"train": {"epochs": 2, "lr": 1.0}}))


def test_job_from_dict_builds_nested_synthetic_and_accepts_dotted_keys():
    cfg = job_from_dict({"data": {"synthetic": {"num_train": 10}}, "train.epochs": 3})
    assert cfg.data.synthetic.num_train == 10 and cfg.train.epochs == 3


def test_flatten_round_trips_through_dotted_keys():
    cfg = job_from_dict({"data": {"resolutions": [64, 32], "synthetic": {"seed": 4}}})
    flat = flatten(cfg)
    assert flat["data.resolutions"] == [64, 32] and flat["data.synthetic.seed"] == 4
    assert job_from_dict(flat) == cfg


# ---------------------------------------------------------------- value validation


@pytest.mark.parametrize("resolutions", ["[96, 128]", "[]", "[64, 0]"])
def test_bad_resolutions_surface_with_the_key(tmp_path, resolutions):
    path = suite_file(tmp_path, f"job:\n  data: {{resolutions: {resolutions}}}\n")
    assert "data.resolutions" in load_error(path)


def test_unknown_method_lists_valid_choices(tmp_path):
    path = suite_file(tmp_path, "job:\n  method: {name: rsnte}\n")
    message = load_error(path)
    assert "method.name" in message and "'rsnte'" in message and "rsnet" in message


def test_empty_grid_axis_is_an_error(tmp_path):
    path = suite_file(tmp_path, "grid:\n  method.distill: []\n")
    assert "grid 'method.distill' must be a non-empty list of values" in load_error(path)


def test_grid_axis_that_is_not_a_list_is_an_error(tmp_path):
    path = suite_file(tmp_path, "grid:\n  method.distill: full\n")
    assert "grid 'method.distill' must be a non-empty list of values" in load_error(path)


def test_suite_with_no_jobs_is_an_error(tmp_path):
    assert "zero jobs" in load_error(suite_file(tmp_path, "cases: []\n"))


def test_errors_of_all_bad_points_come_in_one_message(tmp_path):
    path = suite_file(tmp_path, "grid:\n  method.distill: [full, fulll, vanila]\n  train.seed: [0]\n")
    message = load_error(path)
    assert "2 of 3" in message
    assert "'fulll'" in message and "'vanila'" in message
    assert "{'method.distill': 'fulll', 'train.seed': 0}" in message


def test_different_points_giving_one_job_run_once(tmp_path):
    path = suite_file(tmp_path, "job: {train: {lr: 0.1}}\ncases:\n  - {train.lr: 0.1}\n  - {}\n")
    assert len(load_suite(path).jobs) == 1


def test_switches_a_method_does_not_read_do_not_split_jobs(tmp_path):
    path = suite_file(tmp_path, "grid:\n  method.name: [individual, rsnet]\n  method.distill: [full, vanilla]\n"
                                "job: {data: {resolutions: [32]}}\n")
    jobs = load_suite(path).jobs
    assert sorted((j.config.method.name, j.config.method.distill) for j in jobs) == [
        ("individual", "full"), ("rsnet", "full"), ("rsnet", "vanilla")]


def test_identical_point_listed_twice_runs_once(tmp_path):
    path = suite_file(tmp_path, "grid:\n  train.seed: [0, 1, 0]\n")
    assert [j.config.train.seed for j in load_suite(path).jobs] == [0, 1]


# ---------------------------------------------------------------- I-Net sets


def scaled_san_list(largest: int) -> list[int]:
    return sorted({max(8, round(t * largest / 224)) for t in SAN_TABLE1}, reverse=True)


def test_inet_set_becomes_one_job_per_resolution(tmp_path):
    path = suite_file(tmp_path, """
        job:
          method: {name: individual}
          data: {resolutions: [64, 48, 32]}
        """)
    jobs = load_suite(path).jobs
    assert [j.config.data.resolutions for j in jobs] == [[64], [48], [32]]
    assert len({j.group for j in jobs}) == 1
    assert len({j.name for j in jobs}) == 3
    assert all(j.config.eval.test_resolutions == scaled_san_list(64) for j in jobs)
    assert JobConfig().test_resolutions() == scaled_san_list(224)  # the schema rule we rely on


def test_inet_sets_next_to_multi_resolution_jobs(tmp_path):
    path = suite_file(tmp_path, """
        job:
          data: {resolutions: [64, 48, 32]}
          eval: {test_resolutions: [80, 64, 32]}
        cases:
          - {method.name: individual}
          - {method.name: rsnet}
        grid:
          train.seed: [0, 1]
        """)
    jobs = load_suite(path).jobs
    inet = [j for j in jobs if j.config.method.name == "individual"]
    assert len(inet) == 6 and len({j.group for j in inet}) == 2
    assert all(j.config.eval.test_resolutions == [80, 64, 32] for j in inet)  # given, so kept
    rsnet = [j for j in jobs if j.config.method.name == "rsnet"]
    assert len(rsnet) == 2 and all(j.group == j.name for j in rsnet)


def test_inet_set_must_itself_be_ordered(tmp_path):
    path = suite_file(tmp_path, "job:\n  method: {name: individual}\n  data: {resolutions: [32, 64]}\n")
    assert "large to small" in load_error(path)


# ---------------------------------------------------------------- hashing and names


HASH_SCRIPT = """
import sys
from jobspec import load_suite
print(load_suite(sys.argv[1]).jobs[0].hash)
"""


def test_hash_is_stable_across_processes(tmp_path):
    path = suite_file(tmp_path, "job:\n  data: {resolutions: [64, 32]}\n  train: {lr: 0.05}\n  tag: t\n")
    here = load_suite(path).jobs[0].hash
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", HASH_SCRIPT, str(path)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == here
    assert re.fullmatch(r"[0-9a-f]{12}", here)


def test_hash_ignores_resources_and_loader_workers_only():
    base = config_hash(job_from_dict({}))
    assert config_hash(job_from_dict({"resources": {"workers": 4, "gpus_per_worker": 0.5}})) == base
    assert config_hash(job_from_dict({"data": {"loader_workers": 8}})) == base
    assert config_hash(job_from_dict({"train": {"lr": 0.05}})) != base
    # The synthetic data's content is its settings, wherever it is written; an ImageFolder root is the data.
    assert config_hash(job_from_dict({"data": {"root": "/elsewhere"}})) == base
    assert config_hash(job_from_dict({"data": {"synthetic": {"seed": 7}}})) != base
    imagenet = {"dataset": "imagefolder", "root": "/data/imagenet"}
    assert config_hash(job_from_dict({"data": imagenet})) != \
        config_hash(job_from_dict({"data": {**imagenet, "root": "/data/imagenet-100"}}))


def test_job_names_are_unique_readable_and_filesystem_safe(tmp_path):
    path = suite_file(tmp_path, """
        job: {model: {backbone: resnet18}}
        grid:
          method.distill: [full, vanilla]
          train.seed: [0, 1]
          train.lr: [0.1, 0.05]
          data.synthetic.seed: [0, 1]
        """)
    jobs = load_suite(path).jobs
    names = [j.name for j in jobs]
    assert len(names) == len(set(names)) == 16
    assert all(re.fullmatch(r"[A-Za-z0-9._=+-]+", n) for n in names)
    assert "rsnet-resnet18-distill=vanilla-train.seed=1-lr=0.1-synthetic.seed=0" in names
    assert jobs[0].point == {"method.distill": "full", "train.seed": 0, "train.lr": 0.1,
                             "data.synthetic.seed": 0}


def test_named_cases_name_the_jobs(tmp_path):
    path = suite_file(tmp_path, """
        cases:
          w_o_sd: {method.name: san, method.scale_distill: false}
          full: {method.name: san}
        """)
    assert [j.name for j in load_suite(path).jobs] == ["san-resnet_tiny-w_o_sd", "san-resnet_tiny-full"]


def test_table_lists_every_job(tmp_path):
    path = suite_file(tmp_path, "grid:\n  method.distill: [full, vanilla]\n"
                                "cases:\n  - {method.name: individual}\n  - {method.name: rsnet}\n")
    suite = load_suite(path)
    table = suite.table()
    assert all(j.name in table and j.hash in table for j in suite.jobs)
    assert "method.distill" in table.splitlines()[1]


def test_header_is_the_leading_comment_block(tmp_path):
    path = write(tmp_path, "s.yaml", """
        # Reproduces X.
        #   resolab run experiments/s.yaml
        name: s
        # not header
        """)
    assert load_suite(path).header == "Reproduces X.\n  resolab run experiments/s.yaml"


# ---------------------------------------------------------------- smoke


def test_smoke_keeps_method_switches_and_makes_everything_tiny(tmp_path):
    path = suite_file(tmp_path, """
        job:
          model: {backbone: resnet50}
          method: {name: rsnet, distill: vanilla, bn: shared}
          data: {dataset: imagefolder, root: /data/imagenet, crop: multi, loader_workers: 8}
          train: {epochs: 120, batch_size: 256}
          resources: {workers: 4, gpus_per_worker: 1}
        smoke:
          train.batch_size: 8
        """)
    cfg = load_suite(path, ["train.epochs=2"], smoke=True).jobs[0].config
    assert (cfg.method.name, cfg.method.distill, cfg.method.bn, cfg.data.crop) == (
        "rsnet", "vanilla", "shared", "multi")
    assert (cfg.model.backbone, cfg.model.small_input) == ("resnet_tiny", True)
    assert (cfg.data.dataset, cfg.data.root, cfg.data.resolutions) == ("synthetic", None, [32, 24, 16])
    assert cfg.train.batch_size == 8  # the file's smoke block wins over BUILTIN_SMOKE
    assert cfg.train.epochs == 2  # the CLI wins over both
    assert (cfg.train.max_steps_per_epoch, cfg.eval.max_batches) == (2, 1)
    assert (cfg.resources.workers, cfg.resources.gpus_per_worker) == (1, 0)
    assert cfg.data.synthetic.num_train == BUILTIN_SMOKE["data.synthetic.num_train"]


def test_smoke_keeps_the_resolution_structure(tmp_path):
    path = suite_file(tmp_path, """
        cases:
          single: {method.name: rsnet, data.resolutions: [224, 224, 224], data.crop: multi}
          inet: {method.name: individual, data.resolutions: [224, 192, 160, 128, 96]}
          rsnet: {method.name: rsnet}
        """)
    jobs = load_suite(path, smoke=True).jobs
    by_method = {}
    for job in jobs:
        by_method.setdefault((job.config.method.name, len(job.config.data.resolutions)), []).append(job)
    assert [j.config.data.resolutions for j in by_method[("individual", 1)]] == [[32], [24], [16]]
    assert len({j.group for j in by_method[("individual", 1)]}) == 1
    assert [j.config.data.resolutions for j in by_method[("rsnet", 3)]] == [[32, 32, 32], [32, 24, 16]]


def test_smoke_collapses_axes_it_pins(tmp_path):
    path = suite_file(tmp_path, "grid:\n  model.backbone: [resnet18, resnet50]\n  method.distill: [full, vanilla]\n")
    assert len(load_suite(path).jobs) == 4
    smoke = load_suite(path, smoke=True)
    assert [j.config.method.distill for j in smoke.jobs] == ["full", "vanilla"]


def test_smoke_still_validates_the_real_suite(tmp_path):
    path = suite_file(tmp_path, "job:\n  train: {epochs: 0}\n")
    assert "train.epochs" in load_error(path, smoke=True)


def test_expand_jobs_is_usable_without_a_file():
    jobs = expand_jobs({"model": {"backbone": "resnet18"}}, grid={"train.seed": [0, 1]})
    assert [j.name for j in jobs] == ["rsnet-resnet18-seed=0", "rsnet-resnet18-seed=1"]


# ---------------------------------------------------------------- one source of truth


def test_method_section_and_hash_follow_the_method_catalog():
    from jobspec.hashing import hashed_part
    from methods.catalog import METHODS
    from backbones.catalog import BACKBONES
    declared = {key for entry in METHODS.values() for key in entry.options.model_fields}
    assert set(JobConfig.model_fields["method"].annotation.model_fields) == {"name"} | declared
    for name, entry in METHODS.items():
        tree = job_from_dict({"method": {"name": name}, "data": {"resolutions": [64]}}).to_dict()
        assert set(hashed_part(tree)["method"]) == {"name"} | set(entry.options.model_fields)
    with pytest.raises(ConfigError, match="model.backbone"):
        job_from_dict({"model": {"backbone": "vgg16"}})
    assert all(job_from_dict({"model": {"backbone": b}}).model.backbone == b for b in BACKBONES)


def test_two_methods_declaring_one_switch_differently_is_refused(monkeypatch):
    from typing import Literal

    from jobspec import schema
    from methods.catalog import METHODS, MethodEntry, Options

    class Clashing(Options):
        bn: Literal["private", "shared", "group"] = "group"  # "bn" is already declared with other choices

    monkeypatch.setitem(METHODS, "clashing", MethodEntry("methods.parallel:Parallel", Clashing))
    with pytest.raises(TypeError, match="'bn'"):
        schema._method_section()


def test_keys_added_later_keep_the_hashes_of_existing_jobs():
    # Hashes of two configs as computed before train.schedule/milestones/gamma/compile/check_every
    # existed: finished runs are found by hash, so a new key at its neutral value must not move them.
    assert config_hash(job_from_dict({})) == "76b6ecab7b66"
    # (SAN as it was then: every conv generated, the stem included; see the meta_stem test below.)
    old_san = {"method": {"name": "san", "meta_stem": True}, "data": {"resolutions": [64, 32]}}
    assert config_hash(job_from_dict(old_san)) == "051aa56c010e"
    step = {"train": {"schedule": "step", "milestones": [30, 60]}}
    assert config_hash(job_from_dict(step)) != config_hash(job_from_dict({}))
    # Written out at their neutral values, later keys leave the hash alone; set away from them, they move it.
    neutral = {"data": {"crop_scale": [0.08, 1.0], "synthetic": {"pixel_noise": 0.05, "stripe_period": [0.9, 1.1]}},
               "model": {"zero_init_residual": False}}
    assert config_hash(job_from_dict(neutral)) == "76b6ecab7b66"
    for changed in ({"data": {"crop_scale": [0.35, 1.0]}}, {"model": {"zero_init_residual": True}},
                    {"data": {"synthetic": {"pixel_noise": 0.3}}}, {"data": {"synthetic": {"stripe_period": [1.0, 2.0]}}}):
        assert config_hash(job_from_dict(changed)) != "76b6ecab7b66"


def test_san_meta_stem_hashes_what_it_builds_and_old_san_jobs_keep_their_hashes():
    from jobspec.hashing import training_hash, training_hash_of_params
    from jobspec.tree import param_value

    def san(backbone="resnet_tiny", **method):
        return job_from_dict({"model": {"backbone": backbone}, "method": {"name": "san", **method},
                              "data": {"resolutions": [64, 32]}})

    old = "051aa56c010e"  # this SAN's hash before the switch existed (test above): a generated stem
    assert config_hash(san(meta_stem=True)) == old
    # The new default on a ResNet is the reference's plain stem: another job, however it is spelled.
    assert config_hash(san()) == config_hash(san(meta_stem=False)) != old
    # The reference's MobileNetV2 generates its stem: there the default is the old job, false is a new one.
    assert config_hash(san("mobilenet_v2")) == config_hash(san("mobilenet_v2", meta_stem=True))
    assert config_hash(san("mobilenet_v2", meta_stem=False)) != config_hash(san("mobilenet_v2"))
    # A run recorded before the switch has no method.meta_stem param: it reads as the generated stem.
    params = {k: param_value(v) for k, v in flatten(san(meta_stem=True)).items() if k != "method.meta_stem"}
    assert training_hash_of_params(params) == training_hash(san(meta_stem=True)) != training_hash(san())
    # A new run's params carry the default as "null": the same hash as its config.
    assert training_hash_of_params({k: param_value(v) for k, v in flatten(san()).items()}) == training_hash(san())
    # Privatized convs (SAN Table 4) do not read it: their hash is as before, and setting it is refused.
    assert config_hash(san(convs="private")) == config_hash(
        job_from_dict({"method": {"name": "san", "convs": "private"}, "data": {"resolutions": [64, 32]}}))
    with pytest.raises(ConfigError, match=r"^method.meta_stem=false is read only with method.convs=meta .*drop "
                                          r"method.meta_stem or set method.convs: meta$"):
        san(convs="private", meta_stem=False).validate()


def test_a_san_config_saved_before_meta_stem_existed_loads_with_a_generated_stem():
    assert JobConfig.parse_saved({"method": {"name": "san"}})[0].method.meta_stem is True
    assert JobConfig.parse_saved({"method": {"name": "san", "meta_stem": False}})[0].method.meta_stem is False
    assert JobConfig.parse_saved({"method": {"name": "san", "convs": "private"}})[0].method.meta_stem is None
    assert JobConfig.parse_saved({"method": {"name": "rsnet"}})[0].method.meta_stem is None


@pytest.mark.parametrize("scale", [[0.5, 0.2], [0.0, 1.0], [0.3, 1.5], [0.3]])
def test_crop_scale_must_be_an_area_range(scale):
    with pytest.raises(ConfigError, match=re.escape("data.crop_scale must be [min, max] area fractions")):
        job_from_dict({"data": {"crop_scale": scale}}).validate()


@pytest.mark.parametrize("train, fix", [
    ({"schedule": "step"}, "needs train.milestones"),
    ({"milestones": [30]}, "only with train.schedule=step"),
    ({"schedule": "step", "milestones": [60, 30]}, "increasing positive epochs"),
    ({"schedule": "linear"}, "train.schedule"),
])
def test_step_schedule_settings_are_checked(train, fix):
    with pytest.raises(ConfigError, match=re.escape(fix)):
        job_from_dict({"train": train}).validate()


def test_step_schedule_divides_the_lr_at_each_milestone():
    from orchestrator.engine.loop import build_scheduler
    import torch
    cfg = job_from_dict({"train": {"schedule": "step", "milestones": [2, 3], "gamma": 0.1, "epochs": 4,
                                   "warmup_epochs": 1, "lr": 0.5}})
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg.train.lr)
    sched = build_scheduler(opt, cfg, steps_per_epoch=2)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # warm-up 1/2, 2/2 of 0.5; then 0.5 for epoch 1; 0.05 from epoch 2; 0.005 from epoch 3
    assert lrs == pytest.approx([0.25, 0.5, 0.5, 0.5, 0.05, 0.05, 0.005, 0.005])


def test_smoke_jobs_are_named_as_stand_ins_and_the_suite_says_what_smoke_changed(tmp_path):
    path = suite_file(tmp_path, textwrap.dedent("""\
        job: {data: {resolutions: [64, 32]}, method: {name: san}}
        cases:
          r18: {model.backbone: resnet18}
          r50: {model.backbone: resnet50}
        smoke: {train.batch_size: 8}
    """))
    real = load_suite(path)
    assert [j.name for j in real.jobs] == ["san-resnet18-r18", "san-resnet50-r50"] and real.smoke_note == ""
    smoke = load_suite(path, smoke=True)
    # Both cases become the same tiny job: one runs, under a name that does not claim a ResNet-18.
    assert [j.name for j in smoke.jobs] == ["san-smoke-r18"]
    note = smoke.smoke_note
    assert note.startswith("--smoke: 2 real jobs -> 1 tiny one")
    assert "model.backbone=resnet_tiny" in note and "train.batch_size=8" in note and "train.batch_size=16" not in note
    assert "san-smoke-r18 also stands for: case 'r50'" in note
    # An override on the command line is not something --smoke changed.
    assert "train.epochs" not in load_suite(path, ["train.epochs=3"], smoke=True).smoke_note


# ---------------------------------------------------------------- settings that would run, but not as meant


def test_a_resolution_listed_twice_is_refused_unless_each_copy_gets_its_own_crop(tmp_path):
    message = ("data.resolutions=[32, 32, 24] lists 32 more than once: with one crop for all resolutions every copy "
               "sees the same image, so the copies train identically; list each resolution once, or set data.crop: "
               "multi for RS-Nets' single-resolution multi-crop model")
    with pytest.raises(ConfigError) as info:
        job_from_dict({"data": {"resolutions": [32, 32, 24]}}).validate()
    assert str(info.value) == message
    assert job_from_dict({"data": {"resolutions": [32, 32, 32], "crop": "multi"}}).validate().data.resolutions == [32] * 3
    # An I-Net set with a resolution twice is refused too (each of its jobs alone holds one resolution).
    path = suite_file(tmp_path, "job: {method: {name: individual}, data: {resolutions: [64, 64, 32]}}\n")
    assert "lists 64 more than once" in load_error(path)
    # RS-Nets Table 6's single-resolution jobs (multi-crop) stay valid, real and smoke.
    table6 = REPO / "experiments" / "rsnets_table6.yaml"
    assert [j.config.data.resolutions for j in load_suite(table6).jobs if j.name.endswith("single_res_96")] == [[96] * 5]
    assert any(j.config.data.resolutions == [32, 32, 32] for j in load_suite(table6, smoke=True).jobs)


@pytest.mark.parametrize("key, value", [("act_bits", True), ("weight_bits", False), ("weight_bits", True)])
def test_a_boolean_is_no_number_of_bits(tmp_path, key, value):
    backbone = "preact_resnet_tiny"
    with pytest.raises(ConfigError) as info:
        JobConfig.parse({"model": {"backbone": backbone, key: value}})
    word = "true" if value else "false"
    assert str(info.value) == f"model.{key}: expected one of 1, 2, 3, 4, 5, 6, 7, 8, 32, got {word} (bool)"
    path = suite_file(tmp_path, f"job: {{model: {{backbone: {backbone}, {key}: {word}}}}}\n")
    assert f"model.{key}: expected one of 1, 2, 3, 4, 5, 6, 7, 8, 32, got {word} (bool)" in load_error(path)
    assert JobConfig.parse({"model": {"backbone": backbone, key: 2}}).model.model_dump()[key] == 2


def test_milestones_at_or_after_the_last_epoch_are_refused_for_full_runs():
    step = {"schedule": "step", "epochs": 40}
    with pytest.raises(ConfigError) as info:
        job_from_dict({"train": {**step, "milestones": [30, 40, 45]}}).validate()
    assert str(info.value) == ("train.milestones [40, 45] are not before train.epochs=40: the lr is divided after that "
                               "many epochs, so they would never apply; drop them or scale the milestones to the epochs")
    assert job_from_dict({"train": {**step, "milestones": [30, 39]}}).validate().train.milestones == [30, 39]
    # A run with capped epochs (smoke, tests) is a short test whose schedule is not the point.
    capped = job_from_dict({"train": {**step, "milestones": [30, 60], "max_steps_per_epoch": 2}})
    assert capped.validate().train.milestones == [30, 60]


def test_rsnets_table3_checks_its_milestones_against_its_epochs_even_under_smoke():
    table3 = REPO / "experiments" / "rsnets_table3.yaml"
    assert all(j.config.train.milestones == [30, 60, 85, 95, 105] for j in load_suite(table3, smoke=True).jobs)
    for smoke in (False, True):  # the real jobs are validated under --smoke too
        assert "train.milestones [60, 85, 95, 105] are not before train.epochs=60" in load_error(
            table3, ["train.epochs=60"], smoke=smoke)
