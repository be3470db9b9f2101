"""BatchNorm with per-position statistics (``max_positions``): the BatchNorm of recurrent nets.

Position t of (N, T, C) is normalized exactly as an ordinary BatchNorm normalizes the
(N, C) slice at t, with one row of running statistics per position; in eval mode the
positions beyond ``max_positions`` reuse the last row (Cooijmans et al. 2016).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_parity_torch import assert_close_to_torch, torch_dtype

import normlab as nl

#: Position 1 has a single real token: no batch variance there.
ONE_REAL_TOKEN_AT_POSITION_1 = np.array([[True, True], [True, False], [True, False], [True, False]])


def per_position(max_positions: int = 5, **options) -> nl.BatchNorm:
    return nl.BatchNorm(3, max_positions=max_positions, dtype=np.float64, **options)


def test_each_position_is_an_ordinary_batchnorm_of_its_slice(rng):
    x, dy = rng.normal(2.0, 3.0, size=(6, 5, 3)), rng.normal(size=(6, 5, 3))
    layer = per_position()
    layer.params["weight"][...] = rng.uniform(0.5, 2.0, size=3)
    layer.params["bias"][...] = rng.normal(size=3)
    y = layer(x)
    dx = layer.backward(dy)
    dweight, dbias = np.zeros(3), np.zeros(3)
    for t in range(5):
        slice_layer = nl.BatchNorm(3, dtype=np.float64)
        slice_layer.params["weight"][...] = layer.params["weight"]
        slice_layer.params["bias"][...] = layer.params["bias"]
        np.testing.assert_allclose(slice_layer(x[:, t]), y[:, t], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(slice_layer.backward(dy[:, t]), dx[:, t], atol=1e-12)
        dweight += slice_layer.grads["weight"]
        dbias += slice_layer.grads["bias"]
        np.testing.assert_allclose(layer.running_mean[t], slice_layer.running_mean, rtol=1e-12)
        np.testing.assert_allclose(layer.running_var[t], slice_layer.running_var, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], dweight, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], dbias, rtol=1e-12)


def test_gradients_match_finite_differences_with_and_without_a_mask(rng):
    x = rng.normal(size=(5, 4, 3))
    mask = np.ones((5, 4), dtype=bool)
    mask[0, 2:], mask[3, 3] = False, False
    for given in (None, mask):
        errors = nl.gradcheck(per_position(4), x, given)
        assert max(errors.values()) < 1e-7, errors


def test_eval_mode_reuses_the_last_trained_position_beyond_max_positions(rng):
    layer = per_position(4)
    layer(rng.normal(size=(8, 4, 3)))
    layer.eval()
    x = rng.normal(size=(2, 9, 3))
    y = layer(x)
    rows = [min(t, 3) for t in range(9)]
    expected = (x - layer.running_mean[rows]) / np.sqrt(layer.running_var[rows] + layer.eps)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert layer(x[:, :2]).shape == (2, 2, 3)  # shorter sequences use the first rows


def test_a_shorter_training_batch_moves_only_its_own_rows(rng):
    layer = per_position(6)
    layer(rng.normal(size=(4, 2, 3)))
    assert np.all(layer.running_mean[2:] == 0) and np.all(layer.running_var[2:] == 1)
    assert np.all(layer.running_mean[:2] != 0)


def test_masked_tokens_take_no_part_and_a_position_of_padding_only_keeps_its_row(rng):
    x = rng.normal(size=(6, 4, 3))
    mask = np.ones((6, 4), dtype=bool)
    mask[:, 3] = False  # position 3 is padding in every sequence
    mask[:2, 2] = False
    layer = per_position(4)
    y = layer(x, mask=mask)
    assert np.all(y[~mask] == 0)
    real = x[2:, 2]  # the 4 real tokens at position 2
    unbiased = real.var(axis=0) * 4 / 3
    np.testing.assert_allclose(layer.running_var[2], 0.9 + 0.1 * unbiased, rtol=1e-12)
    assert np.all(layer.running_mean[3] == 0) and np.all(layer.running_var[3] == 1)


def test_state_dict_keeps_one_row_per_position_and_repr_says_so():
    layer = per_position(7)
    state = layer.state_dict()
    assert state["running_mean"].shape == (7, 3) and state["running_var"].shape == (7, 3)
    assert "max_positions=7" in repr(layer)
    layer.load_state_dict({**state, "running_mean": np.full((7, 3), 2.0)})
    assert np.all(layer.running_mean == 2.0)


@pytest.mark.parametrize(
    ("build", "call", "words"),
    [
        (lambda: nl.BatchNorm(3, max_positions=4, ghost_batch_size=2), None, "not both"),
        (lambda: nl.BatchNorm(3, max_positions=0), None, "max_positions"),
        (lambda: per_position(4), lambda layer: layer(np.zeros((4, 3))), "(N, T, C)"),
        (lambda: per_position(4), lambda layer: layer(np.ones((4, 6, 3))), "crop the batch"),
        (
            lambda: per_position(4),
            lambda layer: layer(np.ones((4, 2, 3)), mask=ONE_REAL_TOKEN_AT_POSITION_1),
            "more than 1 value",
        ),
    ],
)
def test_bad_configurations_and_inputs_say_what_to_do(build, call, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        layer = build()
        call(layer)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_batchnorm1d_over_the_flattened_positions(dtype, torch, rng):
    """Per-position BatchNorm on (N, T, C) = BatchNorm1d(T·C) on the (N, T·C) reshape."""
    x = rng.normal(1.0, 2.0, size=(6, 4, 3)).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    ours = nl.BatchNorm(3, max_positions=4, dtype=dtype)
    theirs = torch.nn.BatchNorm1d(12, dtype=torch_dtype(torch, dtype))
    for _ in range(3):  # three training steps move the running statistics
        y = ours(x)
        dx = ours.backward(dy)
        x_torch = torch.tensor(x.reshape(6, 12), requires_grad=True)
        y_torch = theirs(x_torch)
        y_torch.backward(torch.tensor(dy.reshape(6, 12)))
        assert_close_to_torch(y.reshape(6, 12), y_torch, "output")
        assert_close_to_torch(dx.reshape(6, 12), x_torch.grad, "input gradient")
    assert_close_to_torch(ours.running_mean.reshape(12), theirs.running_mean, "running_mean")
    assert_close_to_torch(ours.running_var.reshape(12), theirs.running_var, "running_var")
    ours.eval(), theirs.eval()
    assert_close_to_torch(
        ours(x).reshape(6, 12), theirs(torch.tensor(x.reshape(6, 12))), "eval output"
    )
