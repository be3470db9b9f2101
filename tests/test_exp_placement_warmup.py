"""placement_warmup, quick: the training set-up; the default run: Post-LN fails without warm-up.

The quick config trains for too few steps to show the effect; its tests check what holds at
any size (the schedules, the shared initialization). The default run's outcome is checked on
its committed numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from normlab.experiments import placement_warmup

FIGURES = Path(__file__).resolve().parents[1] / "figures"


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(placement_warmup.NAME)


def test_schedules_differ_only_in_the_warm_up(quick_runs):
    """Any size: the recorded rates rise over the warm-up, then equal the full rate."""
    for record in quick_runs.records(placement_warmup.NAME):
        run, result = record["run"], record["result"]
        rates = np.asarray(result["learning_rate"])
        after = np.asarray(result["eval_steps"]) > run["warmup_steps"]
        assert np.allclose(rates[after], run["lr"])
        if run["schedule"] == "warmup":
            assert rates[0] == pytest.approx(run["lr"] / run["warmup_steps"])
        else:
            assert np.allclose(rates, run["lr"])


def test_every_run_of_a_placement_and_seed_starts_from_the_same_model(results):
    for placement in results["placements"]:
        starts = [
            [curve[0] for curve in results["validation_loss"][str(lr)][placement][schedule]]
            for lr in results["learning_rates"]
            for schedule in results["schedules"]
        ]
        assert np.allclose(starts, starts[0])


def test_failed_means_not_below_the_unigram_baseline():
    assert placement_warmup.failed(None, 3.0) and placement_warmup.failed(3.0, 3.0)
    assert not placement_warmup.failed(2.9, 3.0)


def test_default_run_post_ln_without_warm_up_fails_only_at_the_larger_rate():
    """The committed default numbers (Xiong et al.'s Fig. 2 at this size)."""
    headline = json.loads((FIGURES / "placement_warmup.json").read_text())["headline"]
    rates = sorted(key for key in headline if key.startswith("lr_"))
    larger = max(rates, key=lambda key: float(key[3:]))
    for rate in rates:
        for combination, entry in headline[rate].items():
            expected = entry["runs"] if (rate, combination) == (larger, "post_ln_no_warmup") else 0
            assert entry["failed_runs"] == expected, (rate, combination)
