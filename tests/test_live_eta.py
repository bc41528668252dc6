"""The live view's ETA: measured wall time per epoch (validation and start-up included), the final
evaluation scaled from finished jobs, and pending jobs placed on the slot that frees first."""
import io

import pytest

from orchestrator.cluster.live import LiveView


def view():
    v = LiveView("s", epochs={"A": 4, "B": 4, "C": 2, "D": 4}, costs={"A": 2.0, "B": 1.0, "C": 1.0, "D": 2.0},
                 slots=2, stream=io.StringIO())
    for name in ("A", "B"):
        v.state[name] = "running"
        v.progress[name] = {"started": 0.0}
    return v


def test_eta_before_any_job_finished_uses_running_jobs_wall_time_per_epoch():
    v = view()
    assert v.eta(now=1.0) is None  # nothing measured yet
    v.epoch_done("A", epoch=0, start_epoch=0, img_per_s=1.0, now=10.0)  # 10 s per epoch
    v.epoch_done("B", epoch=1, start_epoch=0, img_per_s=1.0, now=8.0)  # 4 s per epoch
    # rate = mean(4*10/2, 4*4/1) = 18 s per unit of cost. At t=12: A has 3*10 - 2 = 28 s left, B
    # 2*4 - 4 = 4 s. D (cost 2, 36 s) takes B's slot at 4 -> 40; C (18 s) then A's at 28 -> 46.
    assert v.eta(now=12.0) == pytest.approx(46.0)


def test_eta_after_a_job_finished_adds_the_final_evaluation_and_uses_its_total_time():
    v = view()
    v.epoch_done("A", epoch=0, start_epoch=0, img_per_s=1.0, now=10.0)
    v.epoch_done("B", epoch=1, start_epoch=0, img_per_s=1.0, now=8.0)
    v.state["B"] = "done"
    v.finished("B", now=20.0)  # 20 s in all, the last 12 s after its last reported epoch
    # rate = 20 s per unit, final evaluation 12 s per unit. A: 3*10 + 12*2 - (22-10) = 42 s left.
    # The free slot takes D (40 s), then C (20 s) at 40 -> 60.
    assert v.eta(now=22.0) == pytest.approx(60.0)


def test_a_resumed_job_times_only_the_epochs_it_ran():
    v = view()
    v.epoch_done("A", epoch=5, start_epoch=4, img_per_s=1.0, now=10.0)  # resumed after epoch 3: 2 epochs in 10 s
    assert v.progress["A"]["epoch_wall"] == pytest.approx(5.0)
