"""The training loop end to end on tiny synthetic data: every method and ablation trains and yields a
matrix; checkpoints resume exactly; incompatible checkpoints and diverging losses fail clearly."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from methods import build_method
from orchestrator.engine.checkpoint import CheckpointMismatch
from orchestrator.engine.job import run_job
from orchestrator.engine.loop import LocalRuntime, TrainingDiverged, train


class RecordingRuntime(LocalRuntime):
    """The local runtime, also keeping the weights the loop starts from (wrap sees the net before step 0)."""

    def __init__(self, out_dir=None):
        self.lines: list[str] = []
        super().__init__(out_dir, device="cpu", log=self.lines.append)
        self.initial: dict[str, torch.Tensor] = {}

    def wrap(self, net):
        self.initial = copy.deepcopy(net.state_dict())
        self.largest_grad = {name: 0.0 for name, _ in net.named_parameters()}
        for name, param in net.named_parameters():
            param.register_hook(lambda grad, name=name: self._saw(name, grad))
        return net

    def _saw(self, name, grad):
        self.largest_grad[name] = max(self.largest_grad[name], float(grad.abs().max()))


class Interrupted(Exception):
    pass


class CrashAfterFirstEpoch(RecordingRuntime):
    """Writes the epoch-0 checkpoint like the local runtime, then dies, as a preempted worker would."""

    def report(self, metrics, checkpoint_dir):
        super().report(metrics, checkpoint_dir)
        raise Interrupted(f"stopped after epoch {metrics['epoch']}")


CASES = {
    "individual": {"method.name": "individual", "data.resolutions": [32]},
    "parallel": {"method.name": "parallel"},
    "parallel-shared-bn": {"method.name": "parallel", "method.bn": "shared"},
    "rsnet-full": {"method.name": "rsnet"},
    "rsnet-vanilla": {"method.name": "rsnet", "method.distill": "vanilla"},
    "rsnet-from-largest": {"method.name": "rsnet", "method.distill": "from_largest"},
    "rsnet-from-models": {"method.name": "rsnet", "method.distill": "from_models"},
    "rsnet-no-distill": {"method.name": "rsnet", "method.distill": "none"},
    "rsnet-multi-crop": {"method.name": "rsnet", "data.crop": "multi"},
    "rsnet-identical-resolutions": {"method.name": "rsnet", "data.resolutions": [32, 32, 32], "data.crop": "multi"},
    "san": {"method.name": "san"},
    "san-mlp8": {"method.name": "san", "method.meta_hidden": 8},
    "san-no-sd": {"method.name": "san", "method.scale_distill": False},
    "san-shared-bn": {"method.name": "san", "method.bn": "shared"},
    "san-private-convs": {"method.name": "san", "method.convs": "private"},
    "mobilenet_v2-san": {"method.name": "san", "model.backbone": "mobilenet_v2", "data.resolutions": [32, 24],
                         "eval.test_resolutions": [32, 28, 24], "train.max_steps_per_epoch": 1},
    "resnet18-rsnet": {"method.name": "rsnet", "model.backbone": "resnet18", "data.resolutions": [32, 24],
                       "eval.test_resolutions": [32, 28, 24], "train.max_steps_per_epoch": 1},
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_method_trains_and_yields_its_matrix(tiny_job, tmp_path, case):
    # No weight decay: a parameter that changes must have received a gradient.
    cfg = tiny_job(**{"train.weight_decay": 0.0, **CASES[case]})
    runtime = RecordingRuntime(tmp_path)
    result = run_job(cfg, runtime, job_hash=case)

    history = result.trained.history
    assert len(history) == 1
    assert math.isfinite(history[0]["loss/total"]) and history[0]["loss/total"] > 0
    final = result.trained.net.state_dict()
    params = dict(result.trained.net.named_parameters())
    no_gradient = [name for name, largest in runtime.largest_grad.items() if largest == 0.0]
    assert not no_gradient, f"parameters that never received a gradient: {no_gradient}"
    # A parameter that got a gradient but stayed put is one whose steps were all below float32's
    # resolution at its size: an MLP meta net's hidden slopes (1.0) get gradient through an output layer
    # that starts at zero, so in two steps they can move less than one ulp. Anything else must move.
    lr = cfg.train.lr
    unchanged = [name for name in params if torch.equal(final[name], runtime.initial[name])
                 and lr * runtime.largest_grad[name] > 1e-6 * float(final[name].abs().max().clamp(min=1e-3))]
    assert not unchanged, f"parameters that never moved (not in the optimizer?): {unchanged}"

    training = sorted(set(cfg.data.resolutions), reverse=True)
    tests = cfg.eval.test_resolutions
    matrix = result.matrix
    expected_modes = [m.name for m in build_method(cfg.method, cfg.model, cfg.data.resolutions).eval_modes(cfg.eval.calibrate)]
    assert matrix.modes() == expected_modes
    fixed = matrix.table("fixed")
    assert list(fixed.index) == training and list(fixed.columns) == tests
    for mode in build_method(cfg.method, cfg.model, cfg.data.resolutions).eval_modes(cfg.eval.calibrate):
        table = matrix.table(mode.name)
        assert list(table.index) == (training if mode.per_row else ["adaptive"]), mode.name
        columns = [t for t in tests if t not in training] if mode.calibrate else tests
        assert list(table.columns) == columns, mode.name
    values = matrix.frame[["top1", "top5"]].to_numpy()
    assert ((values >= 0) & (values <= 100)).all()
    assert (matrix.frame["top5"] >= matrix.frame["top1"]).all()


@pytest.mark.parametrize("crop", ["single", "multi"])
def test_identical_resolutions_with_one_crop_train_identical_slots(tiny_job, tmp_path, crop):
    """RS-Nets Table 6 "single-resolution": with one crop (and one flip) the S copies of an image are
    the same, so the S BN slots stay clones, the ensemble equals each member and alpha gets no
    gradient -- which is why the paper's single-resolution single-crop row equals the I-Nets. With a
    crop per copy the slots see different images and drift apart."""
    cfg = tiny_job(**{"method.name": "rsnet", "data.resolutions": [32, 32, 32], "data.crop": "multi",
                      "train.weight_decay": 0.0})
    cfg.data.crop = crop  # validate refuses repeated resolutions with one crop, for the reason shown here
    runtime = RecordingRuntime(tmp_path)
    net = train(cfg, runtime, "h").net
    gammas = net.backbone.bn1.weight.detach()
    if crop == "single":
        assert torch.equal(gammas[0], gammas[1]) and torch.equal(gammas[0], gammas[2])
        assert torch.equal(net.mred.alpha.detach(), runtime.initial["mred.alpha"])
    else:
        assert not torch.equal(gammas[0], gammas[1])
        assert not torch.equal(net.mred.alpha.detach(), runtime.initial["mred.alpha"])


# ---------------------------------------------------------------- checkpoints


def resume_job(tiny_job):
    return tiny_job(**{"method.name": "rsnet", "train.epochs": 2})


def test_resume_reproduces_an_uninterrupted_run_exactly(tiny_job, tmp_path):
    cfg = resume_job(tiny_job)
    straight = train(cfg, RecordingRuntime(tmp_path / "straight"), "h")

    with pytest.raises(Interrupted):
        train(cfg, CrashAfterFirstEpoch(tmp_path / "resumed"), "h")
    runtime = RecordingRuntime(tmp_path / "resumed")
    resumed = train(cfg, runtime, "h")
    assert any("resumed" in line and "after epoch 1 of" in line for line in runtime.lines)

    assert [h["epoch"] for h in resumed.history] == [0, 1]
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different}"
    # and training did happen after the resume point
    assert not torch.equal(runtime.initial["mred.alpha"], b["mred.alpha"])


def test_resume_refuses_another_config_or_method(tiny_job, tmp_path):
    cfg = resume_job(tiny_job)
    with pytest.raises(Interrupted):
        train(cfg, CrashAfterFirstEpoch(tmp_path), "hash-a")
    with pytest.raises(CheckpointMismatch) as info:
        train(cfg, RecordingRuntime(tmp_path), "hash-b")
    assert "hash-a" in str(info.value) and "hash-b" in str(info.value)

    other_method = tiny_job(**{"method.name": "parallel", "train.epochs": 2})
    with pytest.raises(CheckpointMismatch) as info:
        train(other_method, RecordingRuntime(tmp_path), "hash-a")
    assert "'rsnet'" in str(info.value) and "'parallel'" in str(info.value)


# ---------------------------------------------------------------- divergence


def test_loss_above_threshold_fails_naming_step_and_fix(tiny_job, tmp_path):
    cfg = tiny_job(**{"method.name": "parallel", "train.divergence_threshold": 1e-3})
    with pytest.raises(TrainingDiverged) as info:
        train(cfg, RecordingRuntime(tmp_path), "h")
    message = str(info.value)
    assert "epoch 1 of 1 step 1:" in message and "train.lr" in message and "divergence_threshold" in message


def test_nan_loss_fails_naming_step_and_fix(tiny_job, tmp_path):
    # lr = inf turns the weights into inf/nan after the first step, so the second loss is NaN,
    # which no threshold comparison catches (NaN > x is False).
    cfg = tiny_job(**{"method.name": "parallel", "train.lr": float("inf")})
    with pytest.raises(TrainingDiverged, match=r"epoch 1 of 1 step 2: total=nan.*Lower train\.lr"):
        train(cfg, RecordingRuntime(tmp_path), "h")


def test_huge_learning_rate_diverges_with_a_clear_error(tiny_job, tmp_path):
    cfg = tiny_job(**{"method.name": "parallel", "train.lr": 1e8, "train.max_steps_per_epoch": 5})
    with pytest.raises(TrainingDiverged, match=r"epoch 1 of 1 step [2-5]: .*Lower train\.lr"):
        train(cfg, RecordingRuntime(tmp_path), "h")


def test_divergence_checked_every_n_steps_names_the_first_bad_step_and_the_window(tiny_job, tmp_path):
    # With train.check_every=3 the verdicts stay on the device until step 3; the message still names
    # step 2, the first NaN one, and the window the deferred check covered.
    cfg = tiny_job(**{"method.name": "parallel", "train.lr": float("inf"), "train.check_every": 3,
                      "train.max_steps_per_epoch": 5})
    with pytest.raises(TrainingDiverged, match=r"epoch 1 of 1 in steps 1-3: step 2 \(checked every 3 steps "
                                               r"over steps 1-3\): total=nan"):
        train(cfg, RecordingRuntime(tmp_path), "h")


class ThreadRecordingRuntime(LocalRuntime):
    """The local runtime, noting torch's thread count at every epoch report."""

    def __init__(self):
        super().__init__(None, device="cpu", log=lambda line: None)
        self.threads: list[int] = []

    def report(self, metrics, checkpoint_dir):
        self.threads.append(torch.get_num_threads())
        super().report(metrics, checkpoint_dir)


def test_a_job_runs_on_its_cpus_per_worker_threads_and_repeats_exactly(tiny_job):
    from orchestrator.engine.job import run_job

    cfg = tiny_job(**{"resources.cpus_per_worker": 1.0, "train.epochs": 2})
    before = torch.get_num_threads()
    results = []
    for _ in range(2):
        runtime = ThreadRecordingRuntime()
        result = run_job(cfg, runtime, "hash")
        assert runtime.threads == [1, 1]  # set from the job's resources, whatever the machine has
        results.append(result)
    assert torch.get_num_threads() == before  # the caller's setting is restored
    first, second = results
    assert first.matrix.frame.equals(second.matrix.frame)
    assert [h["loss/total"] for h in first.trained.history] == [h["loss/total"] for h in second.trained.history]
