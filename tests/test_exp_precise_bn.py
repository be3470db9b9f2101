"""precise_bn in quick mode: a long-horizon running average lags; precise BN repairs it.

The quick config measures after 25 and 50 steps at lr 0.3 with 3 seeds, where the
momentum-0.01 averages still hold most of their starting values; the claims below hold
there with a margin, and are what the default run's figure shows at the probe step.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import precise_bn


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(precise_bn.NAME)


def test_the_momentum_changes_only_the_running_averages(results):
    # train mode and precise BN never read the running averages: identical for every momentum
    assert results["same_weights_for_every_momentum"]
    assert results["diverged_runs"] == 0


def test_precise_bn_beats_the_long_horizon_running_averages(results):
    slow = results["headline"]["per_momentum"]["0.01"]
    low, _ = slow["precise_minus_eval_interval_points"]
    assert low > 0, slow
    assert slow["precise_versus_eval_verdict"] == "better"


def test_the_gain_comes_from_the_horizon(results):
    per_momentum = results["headline"]["per_momentum"]
    assert per_momentum["0.01"]["precise_minus_eval_points"] > (
        per_momentum["0.1"]["precise_minus_eval_points"] + 1
    )
    # what is left of the starting values 0 and 1 after k steps: (1 - m)^k
    probe = results["headline"]["probe_step"]
    assert per_momentum["0.01"]["start_weight_at_probe"] == pytest.approx(0.99**probe)


def test_a_few_samples_are_worse_than_the_whole_training_set(results):
    by_samples = results["headline"]["median_precise_accuracy_percent_by_samples"]
    counts = sorted(by_samples, key=int)
    assert by_samples[counts[0]] < by_samples[counts[-1]]
    needed = results["headline"]["precise_samples_needed"]
    assert needed in results["precise_samples"]
    assert by_samples[str(needed)] >= by_samples[counts[-1]] - precise_bn.WITHIN_POINTS


def test_samples_needed_is_the_first_count_from_which_on_all_are_close():
    counts = [16, 32, 64, 128]
    assert precise_bn.samples_needed(counts, [80.0, 89.0, 91.0, 90.0], 90.0) == 64
    assert precise_bn.samples_needed(counts, [80.0, 81.0, 82.0, 85.0], 90.0) is None
    assert precise_bn.samples_needed(counts, [90.0, 90.0, 90.0, 90.0], 90.0) == 16


def test_the_probe_step_must_be_a_checkpoint():
    with pytest.raises(ValueError, match="probe_step must be one of checkpoints"):
        precise_bn.Config(checkpoints=(25, 100), probe_step=50)


def test_precise_bn_uses_the_whole_training_set_once(results):
    # all 1347 images form one subset: the same numbers whatever subset_draws says
    full = np.asarray(results["precise_full_accuracy"])
    probe = results["checkpoints"].index(results["headline"]["probe_step"])
    np.testing.assert_array_equal(full[probe], np.asarray(results["precise_accuracy_at_probe"])[-1])


def test_the_summary_states_the_verdicts_of_the_run(results):
    text = precise_bn.summary(results)
    verdict = results["headline"]["per_momentum"]["0.01"]["precise_versus_eval_verdict"]
    assert f"precise BN is {verdict} than the running averages" in text
