"""Ghost batches (Hoffer et al., 2017): ``BatchNorm(ghost_batch_size=g)``.

* g = B is ordinary BatchNorm, bit for bit: outputs, gradients, running statistics;
* g < B equals ordinary BatchNorm run on each chunk of g consecutive samples (outputs,
  input and parameter gradients), and the running statistics take one step towards the
  chunks' average (the chunk layers' running statistics, averaged);
* float64 finite differences; masks; bad input (B not a multiple of g, a ghost batch
  with at most one real value) raises before any state changes.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import normlab as nl
from normlab import nn

GRADCHECK_TOLERANCE = 1e-7
SHAPES = [(12, 5), (12, 3, 5), (6, 2, 2, 5)]  # (N, C), (N, T, C), (N, H, W, C)
SHAPE_IDS = ["NC", "NTC", "NHWC"]


def random_batchnorm(rng, num_features=5, *, dtype=np.float64, **options) -> nl.BatchNorm:
    layer = nl.BatchNorm(num_features, dtype=dtype, **options)
    layer.params["weight"][...] = rng.uniform(0.5, 2.0, size=num_features)
    layer.params["bias"][...] = rng.normal(size=num_features)
    return layer


def ghost_and_plain(rng, ghost_batch_size, *, dtype=np.float64, **options):
    """A ghost-batch BatchNorm and an ordinary one with the same γ and β."""
    plain = random_batchnorm(rng, dtype=dtype, **options)
    ghost = nl.BatchNorm(5, ghost_batch_size=ghost_batch_size, dtype=dtype, **options)
    ghost.load_state_dict(plain.state_dict())
    return ghost, plain


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
def test_one_ghost_batch_of_the_whole_batch_is_batchnorm_bit_for_bit(dtype, x_shape, use_mask, rng):
    ghost, plain = ghost_and_plain(rng, x_shape[0], dtype=dtype)
    mask = (rng.random(x_shape[:-1]) < 0.7) if use_mask else None
    for _ in range(2):
        x = rng.normal(1.0, 2.0, size=x_shape).astype(dtype)
        dy = rng.normal(size=x_shape).astype(dtype)
        np.testing.assert_array_equal(ghost(x, mask=mask), plain(x, mask=mask))
        np.testing.assert_array_equal(ghost.backward(dy), plain.backward(dy))
        for name in ("weight", "bias"):
            np.testing.assert_array_equal(ghost.grads[name], plain.grads[name])
        np.testing.assert_array_equal(ghost.running_mean, plain.running_mean)
        np.testing.assert_array_equal(ghost.running_var, plain.running_var)
    assert ghost.num_batches_tracked == plain.num_batches_tracked == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("ghost_batch_size", [2, 3])
def test_ghost_batches_equal_batchnorm_on_each_chunk(
    dtype, x_shape, use_mask, ghost_batch_size, rng
):
    ghost, plain = ghost_and_plain(rng, ghost_batch_size, dtype=dtype)
    x = rng.normal(1.0, 2.0, size=x_shape).astype(dtype)
    dy = rng.normal(size=x_shape).astype(dtype)
    mask = None
    if use_mask:
        mask = rng.random(x_shape[:-1]) < 0.8
        mask.reshape(x_shape[0], -1)[:, :2] = True  # at least two real values per sample
    num_chunks = x_shape[0] // ghost_batch_size
    chunk_layers = [copy.deepcopy(plain) for _ in range(num_chunks)]
    y = ghost(x, mask=mask)
    dx = ghost.backward(dy)
    # float rounding: the chunks' sums are added in another order than the ghost view's
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12}
    dx_tolerance = {"rtol": 0, "atol": 1e-5 if dtype == np.float32 else 1e-12}
    dweight = np.zeros(5)
    for index, layer in enumerate(chunk_layers):
        chunk = slice(index * ghost_batch_size, (index + 1) * ghost_batch_size)
        chunk_mask = None if mask is None else mask[chunk]
        np.testing.assert_allclose(y[chunk], layer(x[chunk], mask=chunk_mask), **tolerance)
        np.testing.assert_allclose(dx[chunk], layer.backward(dy[chunk]), **dx_tolerance)
        dweight += layer.grads["weight"]
    # γ is shared by all ghost batches: its gradient is the sum of the chunks'
    np.testing.assert_allclose(ghost.grads["weight"], dweight, **tolerance)
    # one momentum step towards the average of the chunks' statistics = the chunks' layers
    # (each took one step from the same start), averaged
    for name in ("running_mean", "running_var"):
        averaged = np.mean([getattr(layer, name) for layer in chunk_layers], axis=0)
        np.testing.assert_allclose(getattr(ghost, name), averaged, **tolerance)
    assert ghost.num_batches_tracked == 1


def test_running_statistics_after_one_step_follow_the_formula(rng):
    """One step per forward: running = 0.9 · running + 0.1 · mean over ghost batches of
    (ghost mean, unbiased ghost variance), whatever the number of ghost batches."""
    layer = nl.BatchNorm(4, ghost_batch_size=3, dtype=np.float64)
    x = rng.normal(2.0, 3.0, size=(9, 2, 4))
    layer(x)
    ghosts = x.reshape(3, 6, 4)  # (ghost batch, its 3·2 values, feature)
    expected_mean = 0.9 * 0 + 0.1 * ghosts.mean(axis=1).mean(axis=0)
    expected_var = 0.9 * 1 + 0.1 * ghosts.var(axis=1, ddof=1).mean(axis=0)
    np.testing.assert_allclose(layer.running_mean, expected_mean, rtol=1e-13)
    np.testing.assert_allclose(layer.running_var, expected_var, rtol=1e-13)
    assert layer.num_batches_tracked == 1


def test_cumulative_average_counts_steps_not_ghost_batches(rng):
    layer = nl.BatchNorm(4, ghost_batch_size=2, momentum=None, dtype=np.float64)
    batches = [rng.normal(size=(6, 4)) for _ in range(3)]
    for batch in batches:
        layer(batch)
    assert layer.num_batches_tracked == 3
    per_step = [batch.reshape(3, 2, 4).mean(axis=1).mean(axis=0) for batch in batches]
    np.testing.assert_allclose(layer.running_mean, np.mean(per_step, axis=0), rtol=1e-12)


@pytest.mark.parametrize("x_shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_matches_finite_differences(x_shape, use_mask, training, rng):
    layer = random_batchnorm(rng, ghost_batch_size=3)
    layer(rng.normal(1.0, 2.0, size=x_shape))  # running statistics away from 0 and 1
    mask = None
    if use_mask:
        mask = np.ones(x_shape[:-1], dtype=bool)
        mask.flat[::4] = False  # a quarter of the positions padded, every ghost batch keeps 2
    errors = nl.gradcheck(layer.train(training), rng.normal(0.5, 2.0, size=x_shape), mask=mask)
    for name, error in errors.items():
        assert error < GRADCHECK_TOLERANCE, f"gradient of {name}: relative error {error:.3g}"


def test_eval_mode_ignores_ghost_batches_and_takes_any_batch_size(rng):
    ghost, plain = ghost_and_plain(rng, 4)
    plain(rng.normal(1.0, 2.0, size=(8, 5)))  # running statistics away from 0 and 1
    ghost.load_state_dict(plain.state_dict())
    ghost.eval(), plain.eval()
    for batch in (rng.normal(size=(1, 5)), rng.normal(size=(7, 5))):
        np.testing.assert_array_equal(ghost(batch), plain(batch))


def test_masked_values_take_no_part_and_get_zero_output_and_gradient(rng):
    layer = random_batchnorm(rng, ghost_batch_size=2)
    x, dy = rng.normal(size=(4, 3, 5)), rng.normal(size=(4, 3, 5))
    mask = np.arange(3) < np.array([3, 2, 2, 3])[:, None]
    other = copy.deepcopy(layer)
    y = layer(x, mask=mask)
    np.testing.assert_array_equal(y, other(np.where(mask[..., None], x, 1e3), mask=mask))
    np.testing.assert_array_equal(layer.running_var, other.running_var)
    assert np.all(y[~mask] == 0) and np.all(layer.backward(dy)[~mask] == 0)


def test_mlp_uses_ghost_batches_through_norm_kwargs(rng):
    model = nn.MLP(4, 6, 3, norm="batch", rng=0, norm_kwargs={"ghost_batch_size": 2})
    norms = [layer for layer in model if isinstance(layer, nl.BatchNorm)]
    assert [layer.ghost_batch_size for layer in norms] == [2, 2]
    assert repr(norms[0]).endswith("ghost_batch_size=2)")
    assert nl.make_norm("batch", 6, ghost_batch_size=4).ghost_batch_size == 4
    assert model(rng.normal(size=(8, 4)).astype(np.float32)).shape == (8, 3)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, 2.5, True])
def test_ghost_batch_size_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match=f"ghost_batch_size must be a positive integer.*{value}"):
        nl.BatchNorm(5, ghost_batch_size=value)


def test_batch_not_a_multiple_of_the_ghost_batch_size_names_both_and_changes_nothing(rng):
    layer = random_batchnorm(rng, ghost_batch_size=4)
    layer(rng.normal(size=(8, 5)))
    before = copy.deepcopy(layer)
    with pytest.raises(ValueError, match=r"10 samples.*ghost_batch_size=4.*multiple of 4"):
        layer(rng.normal(size=(10, 5)))
    np.testing.assert_array_equal(layer.running_mean, before.running_mean)
    np.testing.assert_array_equal(layer.running_var, before.running_var)
    assert layer.num_batches_tracked == before.num_batches_tracked
    without_running_stats = nl.BatchNorm(5, ghost_batch_size=4, track_running_stats=False)
    with pytest.raises(ValueError, match="multiple of 4"):  # batch statistics in eval mode too
        without_running_stats.eval()(rng.normal(size=(6, 5)))


@pytest.mark.parametrize(
    ("x_shape", "real_tokens", "values"),
    [
        pytest.param((4, 5), None, 1, id="ghost-of-one-vector"),
        pytest.param((4, 3, 5), [3, 1, 0, 1], 1, id="ghost-with-one-real-token"),
        pytest.param((4, 3, 5), [3, 3, 0, 0], 0, id="ghost-of-padding"),
    ],
)
def test_a_ghost_batch_with_at_most_one_value_per_feature_is_rejected(
    x_shape, real_tokens, values, rng
):
    ghost_batch_size = 1 if real_tokens is None else 2
    layer = nl.BatchNorm(5, ghost_batch_size=ghost_batch_size)
    mask = None if real_tokens is None else np.arange(3) < np.array(real_tokens)[:, None]
    pattern = rf"per feature.* got {values}.*ghost batch of {ghost_batch_size} sample.*larger ghost"
    with pytest.raises(ValueError, match=pattern):
        layer(rng.normal(size=x_shape), mask=mask)
    assert layer.num_batches_tracked == 0
