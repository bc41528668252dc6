"""Bootstrap intervals (analysis.bootstrap: seeds, then images) against hand computations and a direct
loop, and make_tables --ci on the gains over I-Nets (RS-Nets Table 2, quickstart) with the six-image
fixture of test_rsnets_table1."""
from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from analysis import make_tables
from analysis.bootstrap import Bootstrap, paired_gain_interval, resampled_gains
from analysis.tables.overview import quickstart
from analysis.tables.rsnets import rsnets_table2
from analysis.tables.builder import NO_PREDICTIONS_NOTE
from tests.table_cells import Cells, table_cells
from tests.test_rsnets_table1 import RUNS, log_fixture, predictions_of, runs_frame, store  # noqa: F401 (fixture)


def test_identical_predictions_give_zero_and_a_sure_gain_gives_itself():
    right = np.array([1, 0, 1, 1, 0])
    assert paired_gain_interval(right, right) == (0.0, 0.0)
    assert paired_gain_interval(np.ones(4), np.zeros(4)) == (100.0, 100.0)


def test_two_images_enumerated_by_hand():
    """diff = [1, 0]: a resample holds image 0 twice (gain 100, p = 1/4), once (50, p = 1/2) or never (0,
    p = 1/4). With 1000 resamples ~250 sit at each end, far more than the 25 below the 2.5th and above
    the 97.5th percentile, so the interval is exactly [0, 100] around the gain of 50."""
    gains = resampled_gains([1, 0], [0, 0])
    assert set(gains) == {0.0, 50.0, 100.0} and 200 < (gains == 0).sum() < 300
    assert paired_gain_interval([1, 0], [0, 0]) == (0.0, 100.0)


def test_known_difference_vector_against_numpy_from_the_same_seed():
    model = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1, 1])
    base = np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 1])  # differences: +1 at 1, 5, 8; -1 at 4 -> gain 20 points
    assert 100 * (model - base).mean() == 20.0
    gains = resampled_gains(model, base, resamples=1000, seed=0)
    assert abs(gains.mean() - 20.0) < 3.0  # 4 standard errors: sd of a resample's gain ~24 points / sqrt(1000)

    # independently: one (1000, 10) draw of uniforms, scaled to indices, percentiles of the means
    indices = np.minimum((np.random.default_rng(0).random((1000, 10)) * 10).astype(int), 9)
    means = (100.0 * (model - base))[indices].mean(axis=1)
    assert paired_gain_interval(model, base) == tuple(np.percentile(means, [2.5, 97.5]))
    assert Bootstrap(level=0.5).interval(model, base) == tuple(np.percentile(means, [25, 75]))
    assert not np.array_equal(resampled_gains(model, base, seed=1), gains)  # the seed is used


def test_chunking_draws_the_same_resamples():
    rng = np.random.default_rng(5)
    model, base = rng.integers(0, 2, 37), rng.integers(0, 2, 37)
    assert np.array_equal(resampled_gains(model, base, 101, chunk_elements=40),
                          resampled_gains(model, base, 101, chunk_elements=10 ** 6))


def test_no_images_or_unpaired_lists_are_refused():
    with pytest.raises(ValueError):
        paired_gain_interval([], [])
    with pytest.raises(ValueError):
        paired_gain_interval([1, 0, 1], [1, 0])
    with pytest.raises(ValueError):
        paired_gain_interval([[1, 0, 1], [1, 1, 1]], [[1, 0]])


# --------------------------------------------------------------------------------------------
# Several seeds: the seed level


def test_seed_to_seed_variation_enumerated_by_hand():
    """One image; the model's seed 0 gets it right, seed 1 wrong; the base (one seed) wrong. Drawing the
    model's two seeds: both seed 0 (gain 100, p = 1/4), one each (50, p = 1/2) or both seed 1 (0, p = 1/4),
    so with 1000 resamples the interval is exactly [0, 100]. Resampling images alone of the
    seed-averaged correctness (0.5 vs 0) sees no variation at all: [50, 50]."""
    gains = resampled_gains([[1], [0]], [[0]])
    assert set(gains) == {0.0, 50.0, 100.0}
    assert 200 < (gains == 0).sum() < 300 and 200 < (gains == 100).sum() < 300
    assert paired_gain_interval([[1], [0]], [[0]]) == (0.0, 100.0)
    assert paired_gain_interval([0.5], [0.0]) == (50.0, 50.0)
    # Identical seeds carry no seed variation: the image-only interval of one of them.
    model, base = np.array([1, 0, 1, 1, 0, 1]), np.array([0, 0, 1, 0, 1, 1])
    assert paired_gain_interval(np.stack([model, model, model]), base[None, :]) == paired_gain_interval(model, base)


def direct_two_level(model: np.ndarray, base: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The documented draws, one resample at a time: seeds of each model, then images shared by all."""
    images, model_seeds, base_seeds = (np.random.default_rng(s) for s in (seed, [seed, 1], [seed, 2]))
    n, gains = model.shape[1], []
    for _ in range(resamples):
        img = np.minimum((images.random(n) * n).astype(int), n - 1)
        ms = np.minimum((model_seeds.random(len(model)) * len(model)).astype(int), len(model) - 1)
        bs = np.minimum((base_seeds.random(len(base)) * len(base)).astype(int), len(base) - 1)
        gains.append(100.0 * (model[ms][:, img].mean() - base[bs][:, img].mean()))
    return np.array(gains)


def test_two_level_resamples_match_a_direct_loop_and_do_not_depend_on_chunks():
    rng = np.random.default_rng(7)
    model = (rng.random((3, 20)) < np.array([[0.8], [0.6], [0.7]])).astype(float)  # three seeds
    base = (rng.random((2, 20)) < 0.55).astype(float)  # two seeds
    expected = direct_two_level(model, base, 500, seed=3)
    gains = resampled_gains(model, base, 500, seed=3)
    assert np.allclose(gains, expected, rtol=0, atol=1e-9)
    assert np.allclose(resampled_gains(model, base, 500, seed=3, chunk_elements=30), gains, rtol=0, atol=1e-9)
    low, high = Bootstrap(resamples=500, seed=3).interval(model, base)
    assert np.allclose((low, high), np.percentile(expected, [2.5, 97.5]), rtol=0, atol=1e-9)
    # Seeds add spread: wider than images alone of the seed-averaged correctness, around the same gain.
    image_only = paired_gain_interval(model.mean(axis=0), base.mean(axis=0), 500, seed=3)
    assert high - low > image_only[1] - image_only[0]
    assert abs(gains.mean() - 100 * (model.mean() - base.mean())) < 3.0


# --------------------------------------------------------------------------------------------
# The gains over I-Nets with --ci (fixture: RIGHT in test_rsnets_table1)


def table2(ci=None, without=()) -> Cells:
    loads = {name: predictions_of(name) for name in RUNS if name not in without}
    return Cells.of(rsnets_table2(runs_frame(), ["resolab run experiments/rsnets_table2.yaml"],
                                  predictions=loads.get, ci=ci))


def test_table2_gains_get_paired_intervals():
    table = table2(Bootstrap())
    # Parallel at 32 is right on image 4 where I-32 is not: gain 100 k / 6 with k ~ Binomial(6, 1/6):
    # P(k = 0) = 0.33 -> low 0; P(k <= 2) = 0.94 < 0.975 < P(k <= 3) = 0.99 -> high 50
    assert table["32×32", "Parallel"] == "83.3 / 83.3 (+16.7 [+0.0, +50.0])"
    # I-32 at 24 vs I-24: wrong on image 4 only, the same draws mirrored
    assert table["24×24", "I-32"] == "33.3 / 33.3 (-16.7 [-50.0, +0.0])"
    # RS-Net, two seeds (right on all six images / on images 0-4) vs I-32 (one seed, right on 0-3): the
    # seeds are resampled too, each seed's images lined up by index (seed 1 lists them reversed).
    rsnet = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]], dtype=float)
    inet = np.array([[1, 1, 1, 1, 0, 0]], dtype=float)
    low, high = np.percentile(direct_two_level(rsnet, inet, 1000, seed=0), [2.5, 97.5])
    assert table["32×32", "RS-Net"] == f"91.7 ± 11.8 / 91.7 ± 11.8 (+25.0 [+{low:.1f}, +{high:.1f}])"
    assert Bootstrap().legend() in table.legend and NO_PREDICTIONS_NOTE not in table.notes


def test_without_ci_nothing_changes_and_missing_predictions_are_said():
    plain = Cells.of(rsnets_table2(runs_frame(), ["resolab run experiments/rsnets_table2.yaml"]))
    assert table2(ci=None) == plain
    assert not [text for text in plain.texts + plain.legend + plain.notes if "[" in text]
    assert plain["32×32", "Parallel"] == "83.3 / 83.3 (+16.7)"
    table = table2(Bootstrap(), without=("parallel",))
    assert table["32×32", "Parallel"] == "83.3 / 83.3 (+16.7)"
    assert table["24×24", "I-32"] == "33.3 / 33.3 (-16.7 [-50.0, +0.0])"
    assert NO_PREDICTIONS_NOTE in table.notes


def test_quickstart_gains_get_intervals_too():
    loads = {name: predictions_of(name) for name in RUNS}
    table = Cells.of(quickstart(runs_frame(), predictions=loads.get, ci=Bootstrap()))
    assert table.panel("top-1 gain over I-Nets")["32×32", "Parallel"] == "83.3 (+16.7 [+0.0, +50.0])"
    assert Bootstrap().legend() in table.legend


def test_make_tables_ci_flag(capsys, store, tmp_path):
    log_fixture(MlflowClient(store), "rsnets_table2", tmp_path)
    plain = table_cells(capsys, store, "rsnets_table2")
    assert plain["32×32", "Parallel"] == "83.3 / 83.3 (+16.7)" and not [text for text in plain.texts if "[" in text]
    # Markdown, for the legend under the table: it names the resamples drawn
    assert make_tables.main(["rsnets_table2", "--tracking-uri", store, "--no-log", "--ci", "--ci-resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "| 83.3 / 83.3 (+16.7 [" in out and "(200 resamples, seed 0)" in out


@pytest.mark.parametrize("bad", ["0", "-5", "ten", "50"])
def test_ci_resamples_below_a_hundred_or_not_a_number_is_refused(capsys, bad):
    with pytest.raises(SystemExit) as info:
        make_tables.main(["quickstart", "--ci", "--ci-resamples", bad])
    assert info.value.code == 2 and "--ci-resamples" in capsys.readouterr().err
