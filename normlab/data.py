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
* :func:`load_char_corpus` -- a character-level text corpus that ships with CPython
  (``pydoc_data.topics``), split into train and validation blocks, with
  :func:`sample_windows` and :func:`evaluation_windows` (fixed length) and
  :func:`length_batches` (variable length with padding masks, random or bucketed)
  for the language-model experiments; :func:`corpus_fingerprint` records which text it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from normlab import nn
from normlab.module import as_generator

__all__ = [
    "CORPUS_SOURCE",
    "DIGIT_IMAGE_SHAPE",
    "SHIFT_KINDS",
    "CharCorpus",
    "DigitsSplit",
    "PaddedBatch",
    "SequenceTask",
    "corpus_fingerprint",
    "corpus_text",
    "digits_conv_features",
    "digits_hidden_features",
    "evaluation_windows",
    "iterate_minibatches",
    "length_batches",
    "load_char_corpus",
    "load_digits_split",
    "load_digits_validation_split",
    "load_tuning_corpus",
    "make_sequence_task",
    "padded_batch",
    "position_bins",
    "sample_windows",
    "shift_digits",
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
    # One BLAS thread, as every sweep run computes: OpenBLAS splits the rows of a product
    # between its threads, and the rows at a split come out a rounding apart, so a cached
    # array must not depend on how many threads the first caller had.
    with threadpool_limits(limits=1, user_api="blas"):
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
    with threadpool_limits(limits=1, user_api="blas"):  # as in digits_hidden_features
        features = conv(split.x_train_images.astype(np.float64))  # (n, 8, 8, C)
    live = features.reshape(-1, features.shape[-1]).std(axis=0) > _CONSTANT_FEATURE_STD
    features = np.ascontiguousarray(features[..., live])
    features.flags.writeable = False
    return features


#: The test-time distribution shifts of :func:`shift_digits`.
SHIFT_KINDS = ("contrast", "brightness", "noise")


def shift_digits(x: np.ndarray, kind: str, strength: float, rng=None) -> np.ndarray:
    """Standardized digits (vectors or images) under a distribution shift of a given strength.

    The digits are standardized per pixel, so a value is in units of that pixel's
    training standard deviation, around its training mean (:func:`load_digits_split`).
    The shifts act in those units, on every pixel alike:

    * ``"contrast"``: ``x * strength``. 1 changes nothing; below 1 every image fades
      towards the training mean image, above 1 it sharpens away from it; a negative
      factor inverts it.
    * ``"brightness"``: ``x + strength``: every pixel ``strength`` standard deviations
      brighter (0 changes nothing).
    * ``"noise"``: ``x + strength * N(0, 1)``, independent Gaussian noise on every pixel,
      drawn from ``rng`` (a Generator or an int seed).

    Contrast and brightness are affine maps of each pixel, which BatchNorm statistics
    recomputed on the shifted images can undo exactly when a per-feature affine map
    reaches the first BatchNorm unchanged (an MLP: ``x W`` shifts and scales feature by
    feature); noise is not.

    Returns a new float32 array of the shape of ``x``.

    >>> x = np.zeros((2, 3), dtype=np.float32)
    >>> shift_digits(x + 1, "contrast", 0.5).tolist(), shift_digits(x, "brightness", 2).tolist()
    ([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    """
    x = np.asarray(x)
    if not isinstance(strength, (int, float, np.floating, np.integer)) or isinstance(
        strength, bool
    ):
        raise ValueError(f"shift_digits: strength must be a number, got {strength!r}.")
    if not np.isfinite(strength):
        raise ValueError(f"shift_digits: strength must be finite, got {strength!r}.")
    if kind == "contrast":
        shifted = x.astype(np.float64) * strength
    elif kind == "brightness":
        shifted = x.astype(np.float64) + strength
    elif kind == "noise":
        if strength < 0:
            raise ValueError(f"shift_digits: a noise strength (std) must be ≥ 0, got {strength}.")
        noise = as_generator(rng, "shift_digits").standard_normal(x.shape)
        shifted = x.astype(np.float64) + strength * noise
    else:
        raise ValueError(f"shift_digits: kind must be one of {SHIFT_KINDS}, got {kind!r}.")
    return shifted.astype(np.float32)


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


def position_bins(train_length: int, test_length: int) -> list[tuple[int, int]]:
    """Positions in doubling bins from a training length: [0, T), [T, 2T), [2T, 4T), ...

    For reporting a model tested on sequences of ``test_length`` that was trained on
    ``train_length``: the first bin is the trained range, each next one twice as far out;
    the last bin ends at ``test_length`` (it may be shorter).

    >>> position_bins(16, 100)
    [(0, 16), (16, 32), (32, 64), (64, 100)]
    """
    train_length = _check_int(train_length, "train_length", "position_bins", minimum=1)
    test_length = _check_int(test_length, "test_length", "position_bins", minimum=train_length)
    bins, start, stop = [(0, train_length)], train_length, 2 * train_length
    while start < test_length:
        bins.append((start, min(stop, test_length)))
        start, stop = stop, 2 * stop
    return bins


# ---------------------------------------------------------------------------
# Text: a character corpus that ships with CPython
# ---------------------------------------------------------------------------

#: Where the text comes from: the help topics of ``pydoc`` (``help("if")``), in every CPython.
CORPUS_SOURCE = "pydoc_data.topics"


def corpus_text() -> str:
    """The text of :data:`CORPUS_SOURCE`: every topic, in sorted order, joined by newlines.

    Several hundred thousand characters of English about Python (with code examples), of
    about a hundred distinct symbols. The text changes between Python versions, so
    experiments record :func:`corpus_fingerprint` (version, length and sha256) with their
    results.
    """
    from pydoc_data.topics import topics  # part of the standard library: no download

    return "\n".join(topics[name] for name in sorted(topics))


@lru_cache(maxsize=1)
def corpus_fingerprint() -> dict:
    """What identifies the corpus: the Python version it came with and the text's sha256.

    >>> sorted(corpus_fingerprint())
    ['characters', 'python_version', 'sha256', 'source']
    """
    text = corpus_text()
    return {
        "source": CORPUS_SOURCE,
        "python_version": platform.python_version(),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "characters": len(text),
    }


@dataclass(frozen=True)
class CharCorpus:
    """The corpus as integer ids, split into train and validation; see :func:`load_char_corpus`.

    Attributes
    ----------
    vocabulary : str, every character of the whole text, sorted; id ``i`` is ``vocabulary[i]``.
    train, validation : int64 (n,) read-only arrays of ids, the text of each split in order.
    block_length, validation_every : how the split was made (see :func:`load_char_corpus`).
    fingerprint : dict, :func:`corpus_fingerprint` (Python version and sha256 of the text).
    """

    vocabulary: str
    train: np.ndarray
    validation: np.ndarray
    block_length: int
    validation_every: int
    fingerprint: dict

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def split(self, name: str) -> np.ndarray:
        """``"train"`` or ``"validation"``: the ids of that split."""
        if name not in ("train", "validation"):
            raise ValueError(
                f"CharCorpus.split: name must be 'train' or 'validation', got {name!r}."
            )
        return self.train if name == "train" else self.validation

    def encode(self, text: str) -> np.ndarray:
        """Characters -> int64 ids; a character outside the vocabulary is a ValueError."""
        index = {character: i for i, character in enumerate(self.vocabulary)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"CharCorpus.encode: characters not in the vocabulary: {unknown}.")
        return np.array([index[character] for character in text], dtype=np.int64)

    def decode(self, ids) -> str:
        """int ids -> the text they stand for."""
        return "".join(self.vocabulary[i] for i in np.asarray(ids).reshape(-1))

    def unigram_baseline(self) -> float:
        """Validation loss, in nats per character, of predicting every character from the
        training split's character frequencies, whatever came before it.

        .. math::  -\\frac{1}{n} \\sum_{t} \\log \\hat p(c_t), \\qquad
            \\hat p(c) = \\frac{\\mathrm{count}_{train}(c) + 1}{n_{train} + V}

        (add-one smoothing, so a character absent from the training split costs a finite
        amount). A language model that beats it uses the context.
        """
        counts = np.bincount(self.train, minlength=self.vocab_size).astype(np.float64)
        log_probabilities = np.log((counts + 1) / (counts.sum() + self.vocab_size))
        return float(-log_probabilities[self.validation].mean())


@lru_cache(maxsize=4)
def load_char_corpus(block_length: int = 4096, validation_every: int = 10) -> CharCorpus:
    """:func:`corpus_text` as ids, with a deterministic split into contiguous blocks.

    The text is cut into consecutive blocks of ``block_length`` characters; every
    ``validation_every``-th block (blocks ``validation_every - 1``, ``2 * validation_every
    - 1``, ...) goes to the validation split, the others to the training split, each split
    keeping the text's order. Blocks, not random characters, so that validation text is
    text the model has not seen, spread over the whole corpus (its topics are sorted by
    name). A window of the training split may cross the seam where a validation block was
    taken out (one seam per ``validation_every`` blocks).

    Parameters
    ----------
    block_length : int >= 1, default 4096.
    validation_every : int >= 2, default 10 (about 10 % validation).

    Examples
    --------
    >>> corpus = load_char_corpus()
    >>> corpus.decode(corpus.train[:10])
    'The "asser'
    >>> round(len(corpus.validation) / (len(corpus.train) + len(corpus.validation)), 3)
    0.097
    """
    who = "load_char_corpus"
    block_length = _check_int(block_length, "block_length", who, minimum=1)
    validation_every = _check_int(validation_every, "validation_every", who, minimum=2)
    text = corpus_text()
    vocabulary = "".join(sorted(set(text)))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point each
    lookup = np.zeros(int(codes.max()) + 1, dtype=np.int64)
    lookup[[ord(character) for character in vocabulary]] = np.arange(len(vocabulary))
    ids = lookup[codes]  # (n,)
    block_index = np.arange(ids.size) // block_length
    in_validation = block_index % validation_every == validation_every - 1
    train, validation = ids[~in_validation], ids[in_validation]
    train.flags.writeable = False  # shared by every caller of the cached corpus
    validation.flags.writeable = False
    return CharCorpus(
        vocabulary=vocabulary,
        train=train,
        validation=validation,
        block_length=block_length,
        validation_every=validation_every,
        fingerprint=corpus_fingerprint(),
    )


@lru_cache(maxsize=4)
def load_tuning_corpus(block_length: int = 4096, validation_every: int = 10) -> CharCorpus:
    """The training split of :func:`load_char_corpus`, split again, for choosing settings.

    The training split is cut into blocks of ``block_length`` characters in the same way,
    and every ``validation_every``-th block goes to the ``validation`` split of the result
    (the tuning text), the rest to its ``train`` split. Learning rates and other choices
    are made by training on the one and measuring on the other, so the validation split
    of :func:`load_char_corpus`, on which results are reported, is never looked at while
    choosing. The vocabulary (and so every id) is the whole corpus's.

    >>> tuning, corpus = load_tuning_corpus(), load_char_corpus()
    >>> len(tuning.train) + len(tuning.validation) == len(corpus.train)
    True
    >>> tuning.vocabulary == corpus.vocabulary
    True
    """
    corpus = load_char_corpus(block_length, validation_every)
    block_index = np.arange(corpus.train.size) // block_length
    held_out = block_index % validation_every == validation_every - 1
    train, tuning = corpus.train[~held_out], corpus.train[held_out]
    train.flags.writeable = False
    tuning.flags.writeable = False
    return dataclasses.replace(corpus, train=train, validation=tuning)


def _check_window(ids: np.ndarray, length: int, who: str) -> int:
    length = _check_int(length, "length", who, minimum=1)
    if length + 1 > len(ids):
        raise ValueError(
            f"{who}: a window needs length + 1 = {length + 1} ids (inputs and their next "
            f"tokens), but the split has {len(ids)}."
        )
    return length


def sample_windows(ids, batch_size: int, length: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Random windows of a split: inputs (N, T) and their next tokens, the targets (N, T).

    Window ``n`` starts at a uniformly drawn offset ``s``: ``inputs[n] = ids[s : s + T]``,
    ``targets[n] = ids[s + 1 : s + T + 1]``.

    >>> corpus = load_char_corpus()
    >>> inputs, targets = sample_windows(corpus.train, 4, 8, rng=0)
    >>> inputs.shape, bool((inputs[:, 1:] == targets[:, :-1]).all())
    ((4, 8), True)
    """
    who = "sample_windows"
    ids = np.asarray(ids)
    batch_size = _check_int(batch_size, "batch_size", who, minimum=1)
    length = _check_window(ids, length, who)
    starts = as_generator(rng, who).integers(0, len(ids) - length, size=batch_size)  # (N,)
    offsets = starts[:, None] + np.arange(length + 1)  # (N, T + 1)
    windows = ids[offsets]
    return windows[:, :-1], windows[:, 1:]


def evaluation_windows(
    ids, length: int, max_windows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive, non-overlapping windows from the start of a split (no randomness).

    Window ``k`` covers ``ids[k·T : (k + 1)·T + 1]`` (inputs and targets as in
    :func:`sample_windows`); ``max_windows`` keeps the first ones. The same call always
    gives the same windows, so validation losses at different steps, or of different
    models, are measured on the same text. Longer windows (``length`` above the training
    length) test length generalization on the same split.
    """
    who = "evaluation_windows"
    ids = np.asarray(ids)
    length = _check_window(ids, length, who)
    count = (len(ids) - 1) // length
    if max_windows is not None:
        count = min(count, _check_int(max_windows, "max_windows", who, minimum=1))
    offsets = np.arange(count)[:, None] * length + np.arange(length + 1)  # (K, T + 1)
    windows = ids[offsets]
    return windows[:, :-1], windows[:, 1:]


@dataclass(frozen=True)
class PaddedBatch:
    """Sequences of different lengths, right-padded to the longest; see :func:`length_batches`.

    Attributes
    ----------
    ids : int64 (N, T), 0 at padding.
    targets : int64 (N, T), the next token of each real position (0 at padding).
    mask : bool (N, T), True at real tokens.
    lengths : int64 (N,).
    """

    ids: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def padding_fraction(self) -> float:
        """Share of the (N, T) positions that are padding."""
        return float(1.0 - self.mask.mean())


def padded_batch(ids, lengths, rng) -> PaddedBatch:
    """One random window of each length in ``lengths``, right-padded into a batch."""
    who = "padded_batch"
    ids = np.asarray(ids)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.size == 0 or lengths.min() < 1:
        raise ValueError(f"{who}: lengths must be a non-empty list of integers >= 1.")
    longest = _check_window(ids, int(lengths.max()), who)
    rng = as_generator(rng, who)
    starts = rng.integers(0, len(ids) - lengths, size=lengths.size)  # (N,), per length
    mask = np.arange(longest) < lengths[:, None]  # (N, T)
    offsets = starts[:, None] + np.arange(longest + 1)  # (N, T + 1)
    windows = ids[np.minimum(offsets, len(ids) - 1)]  # beyond a window's end: padding
    inputs = np.where(mask, windows[:, :-1], 0)
    targets = np.where(mask, windows[:, 1:], 0)
    return PaddedBatch(ids=inputs, targets=targets, mask=mask, lengths=lengths)


def length_batches(
    ids,
    num_batches: int,
    batch_size: int,
    min_length: int,
    max_length: int,
    rng,
    *,
    bucketed: bool,
) -> list[PaddedBatch]:
    """Batches of variable-length windows, grouped at random or by length (bucketing).

    ``num_batches * batch_size`` lengths are drawn uniformly from ``[min_length,
    max_length]`` and one random window of the split drawn for each. With
    ``bucketed=False`` they are batched in the order drawn, so a batch mixes short and
    long sequences and is padded to its longest (much padding); with ``bucketed=True``
    they are sorted by length first, so each batch holds sequences of about the same
    length (little padding), and the batches are then shuffled. The sequences are the
    same in both cases (same ``rng``): only their grouping differs.

    Returns a list of :class:`PaddedBatch`, each padded to its own longest sequence.

    >>> corpus = load_char_corpus()
    >>> mixed = length_batches(corpus.train, 8, 16, 4, 64, rng=0, bucketed=False)
    >>> bucketed = length_batches(corpus.train, 8, 16, 4, 64, rng=0, bucketed=True)
    >>> def padding(batches):
    ...     return float(np.mean([batch.padding_fraction for batch in batches]))
    >>> padding(bucketed) < padding(mixed)
    True
    """
    who = "length_batches"
    ids = np.asarray(ids)
    num_batches = _check_int(num_batches, "num_batches", who, minimum=1)
    batch_size = _check_int(batch_size, "batch_size", who, minimum=1)
    min_length = _check_int(min_length, "min_length", who, minimum=1)
    max_length = _check_int(max_length, "max_length", who, minimum=min_length)
    _check_window(ids, max_length, who)
    rng = as_generator(rng, who)
    count = num_batches * batch_size
    lengths = rng.integers(min_length, max_length, endpoint=True, size=count)  # (count,)
    starts = rng.integers(0, len(ids) - lengths)  # (count,)
    order = np.argsort(lengths, kind="stable") if bucketed else np.arange(count)
    groups = order.reshape(num_batches, batch_size)
    if bucketed:
        groups = groups[rng.permutation(num_batches)]
    batches = []
    for group in groups:
        group_lengths = lengths[group]
        longest = int(group_lengths.max())
        mask = np.arange(longest) < group_lengths[:, None]  # (B, T)
        offsets = starts[group][:, None] + np.arange(longest + 1)  # (B, T + 1)
        windows = ids[np.minimum(offsets, len(ids) - 1)]
        batches.append(
            PaddedBatch(
                ids=np.where(mask, windows[:, :-1], 0),
                targets=np.where(mask, windows[:, 1:], 0),
                mask=mask,
                lengths=group_lengths,
            )
        )
    return batches
