"""Data for the experiments: scikit-learn's bundled digits and synthetic sequences.

Nothing is downloaded and everything is determined by a seed:

* :func:`load_digits_split` -- the 8x8 handwritten digits that ship inside
  scikit-learn (1797 images, 64 features, 10 classes), split into train and
  test with a fixed stratified split and standardized with train statistics;
  ``split.x_train_images`` gives the same pixels as (N, 8, 8, 1) images for a CNN.
* :func:`digits_hidden_features` -- the digits train rows through a fixed random
  ``Linear`` (and ReLU): what the first hidden layer of an MLP sees at initialization.
* :func:`iterate_minibatches` -- shuffled index arrays for one epoch.
* :func:`make_sequence_task` -- padded variable-length sequences whose labels
  need the earlier tokens ("is this token above the running mean so far?"),
  with lengths the caller controls, for the sequence-model experiments.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from normlab import nn
from normlab.module import as_generator

__all__ = [
    "DIGIT_IMAGE_SHAPE",
    "DigitsSplit",
    "SequenceTask",
    "digits_conv_features",
    "digits_hidden_features",
    "iterate_minibatches",
    "load_digits_split",
    "load_digits_validation_split",
    "make_sequence_task",
]

#: a feature whose train standard deviation is below this is constant (digit borders,
#: a ReLU unit that is off for every image)
_CONSTANT_FEATURE_STD = 1e-8

#: one digit as an image (H, W, C): feature ``8 * row + column`` is pixel (row, column)
DIGIT_IMAGE_SHAPE = (8, 8, 1)


def _check_int(value, what: str, who: str, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{who}: {what} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


# ---------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------


class DigitsSplit(NamedTuple):
    """A train/test split of the digits; unpacks as ``x_train, y_train, x_test, y_test``.

    Attributes
    ----------
    x_train : float32 (n_train, 64), standardized with the train mean and std.
    y_train : int64 (n_train,), digits 0-9.
    x_test : float32 (n_test, 64), standardized with the *train* mean and std.
    y_test : int64 (n_test,).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def x_train_images(self) -> np.ndarray:
        """``x_train`` as images (n_train, 8, 8, 1), features-last, for a CNN (a view)."""
        return self.x_train.reshape(-1, *DIGIT_IMAGE_SHAPE)

    @property
    def x_test_images(self) -> np.ndarray:
        """``x_test`` as images (n_test, 8, 8, 1) (a view)."""
        return self.x_test.reshape(-1, *DIGIT_IMAGE_SHAPE)

    @property
    def num_classes(self) -> int:
        return 10


def load_digits_split(test_fraction: float = 0.25, seed: int = 0) -> DigitsSplit:
    """scikit-learn's bundled 8x8 digits, split and standardized, deterministically.

    The split is stratified (each digit keeps its share in train and test) and
    fixed by ``seed``. Features are standardized per pixel,
    ``(x - mean_train) / std_train``, with statistics from the train split
    only, so nothing about the test set leaks into training. Pixels that are
    constant in the train split (the image border) are only centered.

    Parameters
    ----------
    test_fraction : float in (0, 1), default 0.25
        Share of the 1797 images in the test split (450 at the default).
    seed : int, default 0
        Seeds the split.

    Returns
    -------
    DigitsSplit
        ``(x_train, y_train, x_test, y_test)``; x float32 (n, 64), y int64 (n,).

    Examples
    --------
    >>> split = load_digits_split()
    >>> split.x_train.shape, split.x_test.shape, split.x_train.dtype
    ((1347, 64), (450, 64), dtype('float32'))
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(
            f"load_digits_split: test_fraction must be in (0, 1), got {test_fraction}."
        )
    seed = _check_int(seed, "seed", "load_digits_split", minimum=0)
    digits = load_digits()
    images, labels = digits.data, digits.target  # (1797, 64) float64 in [0, 16], (1797,)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return _standardized_split(x_train, y_train, x_test, y_test)


def _standardized_split(x_train, y_train, x_test, y_test) -> DigitsSplit:
    """Both parts standardized per pixel with the statistics of the training part only."""
    mean = x_train.mean(axis=0)  # (64,)
    std = x_train.std(axis=0)  # (64,)
    std = np.where(std < _CONSTANT_FEATURE_STD, 1.0, std)
    return DigitsSplit(
        x_train=((x_train - mean) / std).astype(np.float32),
        y_train=y_train.astype(np.int64),
        x_test=((x_test - mean) / std).astype(np.float32),
        y_test=y_test.astype(np.int64),
    )


def load_digits_validation_split(
    validation_fraction: float = 0.2, test_fraction: float = 0.25, seed: int = 0
) -> DigitsSplit:
    """A validation split carved from the training images only: for choosing learning rates.

    The training images of :func:`load_digits_split` (same ``test_fraction`` and
    ``seed``) are split again, stratified, into a smaller training part and a
    validation part; the result is a :class:`DigitsSplit` whose *test* arrays are the
    validation images, standardized with the statistics of the smaller training part.
    The real test images take no part, so a choice made here cannot be tuned to them.

    >>> split = load_digits_validation_split()
    >>> len(split.x_train), len(split.x_test)     # 1347 training images, 20 % held out
    (1077, 270)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < validation_fraction < 1:
        raise ValueError(
            "load_digits_validation_split: validation_fraction must be in (0, 1), "
            f"got {validation_fraction}."
        )
    if not 0 < test_fraction < 1:
        raise ValueError(
            f"load_digits_validation_split: test_fraction must be in (0, 1), got {test_fraction}."
        )
    seed = _check_int(seed, "seed", "load_digits_validation_split", minimum=0)
    digits = load_digits()
    images, labels = digits.data, digits.target
    x_train, _, y_train, _ = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )  # exactly the training images of load_digits_split
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=validation_fraction, random_state=seed, stratify=y_train
    )
    return _standardized_split(x_fit, y_fit, x_val, y_val)


@lru_cache(maxsize=8)
def digits_hidden_features(width: int, seed: int, *, relu: bool = False) -> np.ndarray:
    """The digits train rows through a fixed random ``Linear(64, width)``, float64, read-only.

    ``x @ W + b`` with :class:`normlab.nn.Linear`'s initialization drawn from ``seed``
    (the same layer for the same seed in every process): the pre-activations the first
    hidden layer of a digits MLP normalizes at initialization, with the statistics of
    real data (skewed, heavy-tailed features) rather than Gaussian ones. With ``relu``
    the features pass through a ReLU, and features that are 0 for every image (a dead
    unit) are dropped, so the result may have fewer than ``width`` columns.

    Returns an array of shape (1347, width) (or fewer columns), shared between calls:
    it is read-only.
    """
    split = load_digits_split()
    linear = nn.Linear(split.num_features, width, rng=seed, dtype=np.float64)
    features = linear(split.x_train.astype(np.float64))  # (n, width)
    if relu:
        features = nn.ReLU()(features)
        features = features[:, features.std(axis=0) > _CONSTANT_FEATURE_STD]
    features.flags.writeable = False
    return features


@lru_cache(maxsize=8)
def digits_conv_features(channels: int, seed: int) -> np.ndarray:
    """The digits train images through a fixed random ``Conv2d(1, channels, 3, padding=1)``.

    :class:`normlab.nn.Conv2d`'s initialization drawn from ``seed``: the (N, 8, 8, C)
    feature map that the first BatchNorm2d of a digits CNN normalizes at initialization
    (the CNN puts the norm between the convolution and the ReLU). Channels that are
    constant over every image and position are dropped, so the result may have fewer
    than ``channels``. float64, shape (1347, 8, 8, channels or fewer), read-only.
    """
    split = load_digits_split()
    conv = nn.Conv2d(1, channels, 3, padding=1, rng=seed, dtype=np.float64)
    features = conv(split.x_train_images.astype(np.float64))  # (n, 8, 8, C)
    live = features.reshape(-1, features.shape[-1]).std(axis=0) > _CONSTANT_FEATURE_STD
    features = np.ascontiguousarray(features[..., live])
    features.flags.writeable = False
    return features


# ---------------------------------------------------------------------------
# Minibatches
# ---------------------------------------------------------------------------


def iterate_minibatches(
    n: int, batch_size: int, rng, drop_last: bool = True, shuffle: bool = True
) -> Iterator[np.ndarray]:
    """Index arrays covering one epoch of ``n`` samples in random order.

    Parameters
    ----------
    n : int, number of samples.
    batch_size : int >= 1.
    rng : np.random.Generator or int seed, for the permutation.
    drop_last : bool, default True
        Drop the last, smaller batch, so every batch has exactly ``batch_size``
        samples: batch statistics then have the same noise in every step, and a
        BatchNorm layer never gets a leftover batch of 1.
    shuffle : bool, default True; False yields ``0, 1, ..., n-1`` in order.

    Yields
    ------
    int64 ndarray of shape (batch_size,) (the last one shorter if ``drop_last=False``).

    Examples
    --------
    >>> [batch.tolist() for batch in iterate_minibatches(5, 2, rng=0, shuffle=False)]
    [[0, 1], [2, 3]]
    """
    n = _check_int(n, "n", "iterate_minibatches", minimum=0)
    batch_size = _check_int(batch_size, "batch_size", "iterate_minibatches", minimum=1)
    if drop_last and batch_size > n:
        raise ValueError(
            f"iterate_minibatches: batch_size={batch_size} > n={n} with drop_last=True "
            "would give no batch at all; use a smaller batch or drop_last=False."
        )
    if shuffle:
        order = as_generator(rng, "iterate_minibatches").permutation(n)
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


# ---------------------------------------------------------------------------
# Synthetic sequences
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceTask:
    """A batch of padded sequences with labels; see :func:`make_sequence_task`.

    Attributes
    ----------
    x : float32 (N, T, D), 0 at padding.
    mask : bool (N, T), True at real tokens; real tokens come first (right padding).
    y : int64 (N, T) per-token labels (0 at padding), or (N,) per-sequence labels.
    lengths : int64 (N,), the number of real tokens of each sequence.
    num_classes : int, 2.
    """

    x: np.ndarray
    mask: np.ndarray
    y: np.ndarray
    lengths: np.ndarray
    num_classes: int = 2

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def padding_fraction(self) -> float:
        """Share of the (N, T) positions that are padding."""
        return float(1.0 - self.mask.mean())


def make_sequence_task(
    num_sequences: int,
    min_len: int,
    max_len: int,
    feature_dim: int,
    rng,
    *,
    target: str = "token",
    pad_to: int | None = None,
    offset_scale: float = 3.0,
    scale_range: tuple[float, float] = (0.5, 2.0),
) -> SequenceTask:
    """Variable-length sequences labelled "is this token above the running mean so far?".

    Each sequence ``n`` has its own level ``a_n ~ N(0, offset_scale^2)`` and
    spread ``b_n`` (log-uniform in ``scale_range``). Feature 0 of token ``t`` is
    the signal ``s_t = a_n + b_n * e_t`` with ``e_t ~ N(0, 1)``; the other
    ``D - 1`` features are N(0, 1) distractors. The label of token ``t`` is

    .. math::  y_t = [\\, s_t > \\tfrac{1}{t+1} \\textstyle\\sum_{s \\le t} s_s \\,]

    (so ``y_0 = 0``). A token alone says little: whether ``s_t`` is high
    depends on the unknown level ``a_n``, which only the earlier tokens reveal
    (about 60 % of tokens are labelled right by the best fixed threshold on
    ``s_t``, 100 % by the running mean). A model has to average over time, and
    the running mean is defined for any length, so a model trained on short
    sequences can be tested on long ones (length generalization).

    Parameters
    ----------
    num_sequences : int, N.
    min_len, max_len : int, lengths are drawn uniformly from ``[min_len, max_len]``
        (``min_len == max_len`` for a fixed length).
    feature_dim : int >= 1, D.
    rng : np.random.Generator or int seed; everything is drawn from it.
    target : ``"token"`` (default) labels every token, shape (N, T);
        ``"sequence"`` labels each sequence by its last real token ("is the last
        token above the mean of the whole sequence?"), shape (N,).
    pad_to : int, optional, the padded length T (default ``max_len``). The
        sequences themselves do not depend on it, only the amount of padding.
    offset_scale : float, default 3.0, the standard deviation of the levels ``a_n``.
    scale_range : (float, float), default (0.5, 2.0), the range of the spreads ``b_n``.

    Returns
    -------
    SequenceTask
        ``x`` (N, T, D) float32 (0 at padding), ``mask`` (N, T) bool,
        ``y`` int64, ``lengths`` (N,).

    Examples
    --------
    >>> task = make_sequence_task(4, 3, 6, feature_dim=2, rng=0)
    >>> task.x.shape, task.mask.sum(axis=1).tolist() == task.lengths.tolist()
    ((4, 6, 2), True)
    """
    who = "make_sequence_task"
    num_sequences = _check_int(num_sequences, "num_sequences", who, minimum=1)
    min_len = _check_int(min_len, "min_len", who, minimum=1)
    max_len = _check_int(max_len, "max_len", who, minimum=min_len)
    feature_dim = _check_int(feature_dim, "feature_dim", who, minimum=1)
    padded_length = max_len if pad_to is None else _check_int(pad_to, "pad_to", who, max_len)
    if target not in ("token", "sequence"):
        raise ValueError(f"{who}: target must be 'token' or 'sequence', got {target!r}.")
    low_scale, high_scale = scale_range
    if not 0 < low_scale <= high_scale:
        raise ValueError(f"{who}: scale_range must satisfy 0 < low <= high, got {scale_range}.")
    rng = as_generator(rng, who)

    # Draws in a fixed order, each of a shape independent of pad_to.
    lengths = rng.integers(min_len, max_len, endpoint=True, size=num_sequences)  # (N,)
    levels = rng.normal(0.0, offset_scale, size=num_sequences)  # (N,)
    spreads = np.exp(rng.uniform(np.log(low_scale), np.log(high_scale), size=num_sequences))
    values = rng.standard_normal((num_sequences, max_len, feature_dim))  # (N, max_len, D)

    signal = levels[:, None] + spreads[:, None] * values[:, :, 0]  # (N, max_len)
    values[:, :, 0] = signal
    steps = np.arange(1, max_len + 1)  # (max_len,)
    running_mean = np.cumsum(signal, axis=1) / steps  # (N, max_len): mean of s <= t
    labels = (signal > running_mean).astype(np.int64)  # (N, max_len)

    mask = np.arange(padded_length) < lengths[:, None]  # (N, T)
    x = np.zeros((num_sequences, padded_length, feature_dim), dtype=np.float32)  # (N, T, D)
    x[:, :max_len] = values
    x[~mask] = 0.0
    token_labels = np.zeros((num_sequences, padded_length), dtype=np.int64)  # (N, T)
    token_labels[:, :max_len] = labels
    token_labels[~mask] = 0
    if target == "token":
        y = token_labels
    else:
        y = token_labels[np.arange(num_sequences), lengths - 1]  # (N,)
    return SequenceTask(x=x, mask=mask, y=y, lengths=lengths.astype(np.int64))
