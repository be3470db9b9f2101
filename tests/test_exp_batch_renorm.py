"""batch_renorm in quick mode: Batch Renorm against BatchNorm at B = 2 and B = 32.

At B = 2 BatchNorm's training function (every feature ±1) is far from its eval-mode one
whatever the training length, so Batch Renorm's advantage and its smaller train/eval gap
show in the one-epoch quick config as in the default run. That Batch Renorm at
r_max = 1, d_max = 0 is BatchNorm, and the learning-rate choice, hold at any size.
"""

from __future__ import annotations

import pytest

from normlab import training
from normlab.experiments import batch_renorm
from normlab.training import RenormSchedule


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(batch_renorm.NAME)


def test_batch_renorm_beats_batchnorm_at_the_smallest_batch(results):
    headline = results["headline"]
    assert headline["smallest_batch_size"] == 2
    low, _ = headline["renorm_minus_batch_interval_at_smallest"]
    assert low > 0, headline
    assert headline["renorm_versus_batch_verdict_at_smallest"] == "better"


def test_batch_renorm_has_the_smaller_train_eval_gap_at_the_smallest_batch(results):
    gap = results["headline"]["median_train_eval_gap_points"]
    assert gap["batch_renorm"]["2"] < gap["batch"]["2"] - 5


def test_r_is_clipped_more_often_at_the_smallest_batch(results):
    shares = results["headline"]["median_clipped_share_percent"]
    assert all(0 <= share <= 100 for kind in shares.values() for share in kind.values())
    assert shares["r"]["2"] > shares["r"]["32"]


def test_without_the_relaxation_batch_renorm_trains_exactly_as_batchnorm():
    options = {"batch_size": 8, "seed": 0, "epochs": 1, "steps": 30}
    plain = training.train_mlp(norm="batch", **options)
    held = RenormSchedule(r_max=1.0, d_max=0.0)  # limits never relaxed
    renorm = training.train_mlp(norm="batch_renorm", renorm_schedule=held, **options)
    assert renorm["test_correct"] == plain["test_correct"]
    assert renorm["final_train_loss"] == plain["final_train_loss"]
    relaxed = training.train_mlp(norm="batch_renorm", renorm_schedule=RenormSchedule(), **options)
    assert relaxed["final_train_loss"] != plain["final_train_loss"]


def test_the_base_learning_rates_are_the_best_on_validation(results, quick_runs):
    config = results["config"]
    validation = {}
    for record in quick_runs.records(batch_renorm.NAME):
        if record["function"].endswith("measure_validation"):
            run = record["run"]
            key = (run["norm"], run["base_lr"])
            validation.setdefault(key, {})[run["seed"]] = record["result"]["validation_accuracy"]
    for norm in config["norms"]:
        table = [
            [validation[(norm, rate)][seed] for seed in config["seeds"]]
            for rate in config["base_learning_rates"]
        ]
        expected = training.best_learning_rate(config["base_learning_rates"], table)
        assert results["base_learning_rates"][norm] == expected


def test_the_summary_states_the_verdict_against_batchnorm(results):
    text = batch_renorm.summary(results)
    assert "Batch Renorm is better than BatchNorm" in text
    assert "train/eval gap" in text
