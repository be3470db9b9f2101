"""The options of the one digits training loop (``training.fit``) and its helpers.

* ``on_step`` sees every step, and measuring a copy there leaves the training unchanged;
* ``frozen_batchnorm`` keeps every BatchNorm an eval-mode affine map while γ, β and the
  other weights learn: the running statistics do not move, and a batch of one trains;
* ``renorm_schedule`` sets Batch Renorm's limits before each step, on the schedule's
  shape; a Batch Renorm left at r_max = 1, d_max = 0 without one is warned about;
* ``recompute_batchnorm_statistics`` leaves the statistics of the data it was given;
* ``best_learning_rate`` picks by median validation accuracy; ``shift_digits``.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import normlab as nl
from normlab import data, nn, training
from normlab.training import RenormSchedule

STEPS = 12


def small_split(size: int = 64) -> data.DigitsSplit:
    split = training.digits()
    return data.DigitsSplit(
        split.x_train[:size], split.y_train[:size], split.x_test[:40], split.y_test[:40]
    )


def mlp(norm: str = "batch", seed: int = 0):
    rng = np.random.default_rng(seed)
    return nn.MLP(64, 16, 10, norm=norm, rng=rng), rng


def test_on_step_sees_every_step_and_a_measured_copy_changes_nothing():
    seen = []

    def measure(step, model, loss, x, y):
        seen.append((step, np.isfinite(loss)))
        training.predict(copy.deepcopy(model), small_split().x_test)  # measure a copy

    model, rng = mlp()
    measured = training.fit(
        model, small_split(), rng, batch_size=8, epochs=1, steps=STEPS, on_step=measure
    )
    plain_model, plain_rng = mlp()
    plain = training.fit(plain_model, small_split(), plain_rng, batch_size=8, epochs=1, steps=STEPS)
    assert seen == [(step, True) for step in range(1, STEPS + 1)]
    assert measured["test_correct"] == plain["test_correct"]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, plain_model.state_dict()[name])


def test_frozen_batchnorm_keeps_the_running_statistics_and_learns_the_affine_map():
    model, rng = mlp()
    model(small_split().x_train)  # running statistics away from 0 and 1
    norm = training.batchnorm_layers(model)[0]
    before = copy.deepcopy(norm)
    weight_before = model[0].params["weight"].copy()
    numbers = training.fit(
        model, small_split(), rng, batch_size=1, epochs=1, steps=STEPS, frozen_batchnorm=True
    )  # a batch of one: fine for an affine map
    assert numbers["steps"] == STEPS and not numbers["diverged"]
    np.testing.assert_array_equal(norm.running_mean, before.running_mean)
    np.testing.assert_array_equal(norm.running_var, before.running_var)
    assert norm.num_batches_tracked == before.num_batches_tracked
    assert not np.array_equal(norm.params["weight"], before.params["weight"])  # γ learns
    assert not np.array_equal(model[0].params["weight"], weight_before)


def test_a_batch_of_one_still_cannot_train_batchnorm_in_train_mode():
    model, rng = mlp()
    with pytest.raises(ValueError, match="one sample per batch"):
        training.fit(model, small_split(), rng, batch_size=1, epochs=1, steps=2)


def test_the_renorm_schedule_sets_the_limits_before_every_step():
    schedule = RenormSchedule()
    seen = []
    model, rng = mlp("batch_renorm")
    layers = [layer for layer in model.modules() if isinstance(layer, nl.BatchRenorm)]

    def record(step, model, loss, x, y):
        seen.append((layers[0].r_max, layers[-1].d_max))

    training.fit(
        model,
        small_split(),
        rng,
        batch_size=8,
        epochs=1,
        steps=40,
        renorm_schedule=schedule,
        on_step=record,
    )
    assert seen == [schedule.limits(step, 40) for step in range(40)]
    assert seen[0] == (1.0, 0.0) and seen[-1] == (3.0, 5.0)


def test_the_renorm_schedule_has_the_papers_shape():
    schedule = RenormSchedule()
    r_max, d_max = zip(*(schedule.limits(step, 1000) for step in range(1000)), strict=True)
    assert r_max[:50] == (1.0,) * 50 and d_max[:51] == (0.0,) * 51  # BatchNorm first
    assert np.all(np.diff(r_max) >= 0) and np.all(np.diff(d_max) >= 0)
    assert r_max.index(3.0) == 400 and d_max.index(5.0) == 250


@pytest.mark.parametrize(
    "options",
    [{"r_max": 0.5}, {"d_max": -1.0}, {"start": 0.5, "d_max_at": 0.25}, {"r_max_at": 1.5}],
)
def test_a_renorm_schedule_that_cannot_be_built_says_why(options):
    with pytest.raises(ValueError, match="renorm_schedule"):
        RenormSchedule(**options)


def test_batch_renorm_without_a_schedule_is_warned_about():
    model, rng = mlp("batch_renorm")
    with pytest.warns(UserWarning, match="exactly BatchNorm"):
        training.fit(model, small_split(), rng, batch_size=8, epochs=1, steps=2)
    model, rng = mlp("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        training.fit(model, small_split(), rng, batch_size=8, epochs=1, steps=2)


def test_recomputed_statistics_are_those_of_the_data_given():
    model, _ = mlp()
    model.params["0.weight"][...] *= 3.0
    x = small_split().x_train.astype(np.float64)
    training.recompute_batchnorm_statistics(model, x.astype(np.float32))
    first = training.batchnorm_layers(model)[0]
    inputs = x @ model[0].params["weight"].astype(np.float64)  # the first BatchNorm's input
    np.testing.assert_allclose(first.running_mean, inputs.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(first.running_var, inputs.var(axis=0, ddof=1), rtol=1e-4)
    assert not model.training and first.momentum == 0.1  # momentum restored, eval mode


def test_best_learning_rate_takes_the_median_and_breaks_ties_low():
    assert training.best_learning_rate([0.3, 0.1], [[0.9, 0.9, 0.1], [0.8, 0.8, 0.8]]) == 0.3
    assert training.best_learning_rate([0.3, 0.1], [[0.9, 0.9], [0.9, 0.9]]) == 0.1
    with pytest.raises(ValueError, match="shape"):
        training.best_learning_rate([0.1, 0.3], [0.9, 0.8])


def test_shifts_act_in_units_of_each_pixels_standard_deviation():
    x = training.digits().x_test[:5]
    np.testing.assert_array_equal(data.shift_digits(x, "contrast", 1.0), x)
    np.testing.assert_allclose(data.shift_digits(x, "contrast", -2.0), -2 * x)
    np.testing.assert_allclose(data.shift_digits(x, "brightness", 1.5), x + 1.5, rtol=1e-6)
    noisy = data.shift_digits(x, "noise", 0.5, rng=0)
    np.testing.assert_array_equal(noisy, data.shift_digits(x, "noise", 0.5, rng=0))
    assert 0.4 < np.std(noisy - x) < 0.6 and noisy.dtype == np.float32
    np.testing.assert_array_equal(data.shift_digits(x, "noise", 0.0, rng=0), x)


@pytest.mark.parametrize(
    ("kind", "strength", "message"),
    [
        ("blur", 1.0, "kind must be one of"),
        ("noise", -1.0, "must be ≥ 0"),
        ("contrast", float("nan"), "finite"),
        ("brightness", "2", "must be a number"),
    ],
)
def test_a_shift_that_cannot_be_made_says_why(kind, strength, message):
    with pytest.raises(ValueError, match=message):
        data.shift_digits(np.zeros((2, 64), dtype=np.float32), kind, strength, rng=0)
