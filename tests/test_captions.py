"""Captions and legends follow the run: one seed, one batch size, few training steps.

Small real runs of the two training experiments (one epoch, one seed): what their
figures say must be computed from what ran.
"""

from __future__ import annotations

import pytest

from normlab import training
from normlab.experiments import accuracy_vs_batch_size, train_eval_gap
from normlab.training import TrainingSetup

ONE_EPOCH = TrainingSetup(epochs=1)


def caption(figure) -> str:
    return " ".join(figure.get_supxlabel().split())


@pytest.fixture(scope="module")
def one_large_batch():
    """accuracy_vs_batch_size at B = 1000 only, one seed: one step per epoch."""
    config = accuracy_vs_batch_size.Config(
        norms=("layer",), batch_sizes=(1000,), seeds=(0,), training=ONE_EPOCH
    )
    return config, accuracy_vs_batch_size.run(config)


def test_the_samples_seen_are_the_ones_run_not_the_epochs_times_the_set(one_large_batch):
    _, results = one_large_batch
    assert results["samples_seen"] == [1000]  # 1347 // 1000 = 1 batch per epoch
    assert "(1,000 samples seen)" in results["training_description"]
    assert "≈" not in results["training_description"]
    text = caption(accuracy_vs_batch_size.plot(results))
    assert "(1 step at B = 1000)" in text
    assert text.count("B = 1000") == 1  # no range from 1000 to 1000
    assert "1 seed." in text and "1 seeds" not in text and "band" not in text


def test_the_planned_budget_is_what_training_does():
    setup = TrainingSetup(epochs=2)
    numbers = training.train_mlp(norm="layer", batch_size=500, seed=0, epochs=2)
    assert numbers["steps"] == setup.steps(500) == 4
    assert numbers["samples_seen"] == setup.samples_seen(500) == 2000
    assert setup.describe((2, 500)).endswith("at every B (2,000–2,692 samples seen)")


def test_too_few_steps_are_a_concern_of_the_config(one_large_batch):
    config, _ = one_large_batch
    (concern,) = config.concerns()
    assert "batch size 1000 takes only 1 optimizer step " in concern
    assert f"fewer than {training.MIN_TRAINING_STEPS}" in concern
    assert accuracy_vs_batch_size.Config().concerns() == []


@pytest.fixture(scope="module")
def one_batch_size_one_seed():
    """train_eval_gap --batch-sizes 3 --seeds 1, one epoch."""
    config = train_eval_gap.Config(
        batch_sizes=(3,), seeds=(0,), test_batch_sizes=(1, 2, 32, 450), training=ONE_EPOCH
    )
    return train_eval_gap.run(config)


def test_one_seed_and_one_batch_size_give_a_caption_and_axes_that_fit(one_batch_size_one_seed):
    figure = train_eval_gap.plot(one_batch_size_one_seed)
    text = caption(figure)
    assert "1 seed." in text and "median of 1" not in text
    ax_left = figure.axes[0]
    assert ax_left.get_xlim() == (1.5, 6.0)  # the single batch size mid-panel
    assert ax_left.get_legend()._loc == 0  # "best": clear of the points


def test_the_note_on_a_batch_of_one_stays_below_the_data(one_batch_size_one_seed):
    results = one_batch_size_one_seed
    figure = train_eval_gap.plot(results)
    ax_right = figure.axes[1]
    bottom, top = ax_right.get_ylim()
    lowest = 100 * min(min(row) for row in results["probe_train_mode_accuracy"] if row)
    assert (lowest - bottom) / (top - bottom) >= train_eval_gap.NOTE_ROOM
