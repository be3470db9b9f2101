"""Tests of normlab.data: the digits split, minibatches and the synthetic sequence task."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from normlab import data, nn
from normlab.data import (
    digits_hidden_features,
    iterate_minibatches,
    load_digits_split,
    make_sequence_task,
)

# ---------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------


def test_digits_split_shapes_and_dtypes():
    split = load_digits_split()
    x_train, y_train, x_test, y_test = split  # unpacks like a tuple
    assert x_train.shape == (1347, 64) and x_test.shape == (450, 64)
    assert y_train.shape == (1347,) and y_test.shape == (450,)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert y_train.dtype == np.int64 and set(np.unique(y_train)) == set(range(10))
    assert split.num_features == 64 and split.num_classes == 10


def test_digits_split_is_deterministic_and_seeded():
    first, second = load_digits_split(seed=3), load_digits_split(seed=3)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    other = load_digits_split(seed=4)
    assert not np.array_equal(first.y_test, other.y_test)


@pytest.mark.parametrize("test_fraction", [0.25, 0.5])
def test_digits_split_is_stratified(test_fraction):
    split = load_digits_split(test_fraction=test_fraction)
    train_counts = np.bincount(split.y_train, minlength=10)
    test_counts = np.bincount(split.y_test, minlength=10)
    total_counts = train_counts + test_counts
    expected_test = test_fraction * total_counts
    assert np.all(np.abs(test_counts - expected_test) <= 1)  # each digit keeps its share


def test_digits_standardized_with_train_statistics_only():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    split = load_digits_split(seed=0)
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0, atol=1e-5)
    train_std = split.x_train.std(axis=0)
    varying = train_std > 0
    np.testing.assert_allclose(train_std[varying], 1, atol=1e-5)
    assert np.all(split.x_train[:, ~varying] == 0)  # constant border pixels: centered to 0

    digits = load_digits()
    raw_train, raw_test = train_test_split(
        digits.data, test_size=0.25, random_state=0, stratify=digits.target
    )
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    std[std == 0] = 1
    np.testing.assert_allclose(split.x_test, (raw_test - mean) / std, rtol=1e-6, atol=1e-6)
    assert np.abs(split.x_test.mean(axis=0)).max() > 0.01  # test stats were not used


def test_digits_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(test_fraction=1.0)


# ---------------------------------------------------------------------------
# Minibatches
# ---------------------------------------------------------------------------


def test_minibatches_drop_last():
    batches = list(iterate_minibatches(10, 3, rng=0))
    assert [len(batch) for batch in batches] == [3, 3, 3]
    indices = np.concatenate(batches)
    assert len(np.unique(indices)) == 9 and indices.min() >= 0 and indices.max() < 10
    assert indices.dtype.kind == "i"


def test_minibatches_keep_last_cover_a_permutation():
    batches = list(iterate_minibatches(10, 4, rng=np.random.default_rng(0), drop_last=False))
    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))


def test_minibatches_deterministic_and_shuffled():
    def epoch(seed):
        return np.concatenate(list(iterate_minibatches(100, 10, rng=seed)))

    np.testing.assert_array_equal(epoch(1), epoch(1))
    assert not np.array_equal(epoch(1), epoch(2))
    assert not np.array_equal(epoch(1), np.arange(100))
    ordered = np.concatenate(list(iterate_minibatches(100, 10, rng=0, shuffle=False)))
    np.testing.assert_array_equal(ordered, np.arange(100))


def test_minibatches_consume_the_generator():
    rng = np.random.default_rng(0)
    first = np.concatenate(list(iterate_minibatches(50, 5, rng)))
    second = np.concatenate(list(iterate_minibatches(50, 5, rng)))
    assert not np.array_equal(first, second)  # a new order every epoch


def test_minibatches_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        list(iterate_minibatches(10, 0, rng=0))
    with pytest.raises(ValueError, match="no batch"):
        list(iterate_minibatches(3, 4, rng=0))
    assert [len(b) for b in iterate_minibatches(3, 4, rng=0, drop_last=False)] == [3]
    with pytest.raises(TypeError, match="Generator"):
        list(iterate_minibatches(10, 2, rng=None))


# ---------------------------------------------------------------------------
# Sequence task
# ---------------------------------------------------------------------------


def test_sequence_task_shapes_mask_and_padding():
    task = make_sequence_task(200, 3, 9, feature_dim=4, rng=0)
    assert task.x.shape == (200, 9, 4) and task.x.dtype == np.float32
    assert task.mask.shape == (200, 9) and task.mask.dtype == np.bool_
    assert task.y.shape == (200, 9) and task.y.dtype == np.int64
    assert len(task) == 200 and task.num_classes == 2
    assert task.lengths.min() == 3 and task.lengths.max() == 9  # both ends are drawn
    np.testing.assert_array_equal(task.mask, np.arange(9) < task.lengths[:, None])
    assert np.all(task.x[~task.mask] == 0) and np.all(task.y[~task.mask] == 0)
    expected_padding = 1 - task.lengths.sum() / (200 * 9)
    assert task.padding_fraction == pytest.approx(expected_padding)


def test_sequence_task_labels_follow_the_running_mean_rule():
    task = make_sequence_task(20, 1, 12, feature_dim=3, rng=5)
    for n in range(20):
        signal = task.x[n, : task.lengths[n], 0].astype(np.float64)
        for t in range(task.lengths[n]):
            expected = int(signal[t] > signal[: t + 1].mean())
            if abs(signal[t] - signal[: t + 1].mean()) > 1e-5:  # float32 storage of x
                assert task.y[n, t] == expected
    assert np.all(task.y[:, 0] == 0)  # a token is never above a mean of itself


def test_sequence_task_needs_context():
    """A threshold on the current token alone is far worse than the running mean."""
    task = make_sequence_task(1000, 20, 20, feature_dim=2, rng=0)
    signal, labels = task.x[..., 0][task.mask], task.y[task.mask]
    assert 0.4 < labels.mean() < 0.6
    thresholds = np.quantile(signal, np.linspace(0.01, 0.99, 99))
    best_context_free = max(
        max(np.mean((signal > threshold) == labels), np.mean((signal <= threshold) == labels))
        for threshold in thresholds
    )
    assert best_context_free < 0.7


def test_sequence_task_is_deterministic_and_independent_of_padding():
    first = make_sequence_task(30, 2, 10, feature_dim=3, rng=7)
    second = make_sequence_task(30, 2, 10, feature_dim=3, rng=np.random.default_rng(7))
    for field in ("x", "mask", "y", "lengths"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert not np.array_equal(first.x, make_sequence_task(30, 2, 10, 3, rng=8).x)
    padded = make_sequence_task(30, 2, 10, feature_dim=3, rng=7, pad_to=25)
    assert padded.x.shape == (30, 25, 3) and padded.padding_fraction > first.padding_fraction
    np.testing.assert_array_equal(padded.x[:, :10], first.x)
    np.testing.assert_array_equal(padded.y[:, :10], first.y)
    assert not padded.mask[:, 10:].any()


def test_sequence_task_sequence_targets_and_fixed_length():
    tokens = make_sequence_task(50, 6, 6, feature_dim=2, rng=1)
    sequences = make_sequence_task(50, 6, 6, feature_dim=2, rng=1, target="sequence")
    assert sequences.y.shape == (50,) and tokens.mask.all()
    np.testing.assert_array_equal(sequences.y, tokens.y[:, -1])


def test_sequence_task_bad_arguments():
    with pytest.raises(ValueError, match="max_len"):
        make_sequence_task(5, 6, 4, feature_dim=2, rng=0)
    with pytest.raises(ValueError, match="pad_to"):
        make_sequence_task(5, 2, 4, feature_dim=2, rng=0, pad_to=3)
    with pytest.raises(ValueError, match="target"):
        make_sequence_task(5, 2, 4, feature_dim=2, rng=0, target="pooled")
    with pytest.raises(ValueError, match="min_len"):
        make_sequence_task(5, 0, 4, feature_dim=2, rng=0)


def test_digits_hidden_features_are_a_fixed_random_linear_of_the_digits():
    features = digits_hidden_features(16, 0)
    split = load_digits_split()
    linear = nn.Linear(64, 16, rng=0, dtype=np.float64)
    with threadpool_limits(limits=1, user_api="blas"):  # the array does not depend on threads
        expected = linear(split.x_train.astype(np.float64))
    np.testing.assert_array_equal(features, expected)
    assert not features.flags.writeable  # shared between callers
    assert digits_hidden_features(16, 0) is features
    activations = digits_hidden_features(16, 0, relu=True)
    assert activations.min() == 0.0
    assert activations.shape[1] <= 16
    assert np.all(activations.std(axis=0) > 0)  # dead units dropped


def test_the_validation_split_is_carved_from_the_training_images_only():
    test_split = load_digits_split()
    validation = data.load_digits_validation_split()
    assert len(validation.x_train) + len(validation.x_test) == len(test_split.x_train)
    assert np.bincount(validation.y_test, minlength=10).min() >= 25  # stratified: every digit
    labels_seen = np.sort(np.concatenate([validation.y_train, validation.y_test]))
    np.testing.assert_array_equal(labels_seen, np.sort(test_split.y_train))
    again = data.load_digits_validation_split()
    np.testing.assert_array_equal(again.x_test, validation.x_test)
    with pytest.raises(ValueError, match="validation_fraction"):
        data.load_digits_validation_split(validation_fraction=1.0)
