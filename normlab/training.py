"""The training loops shared by the experiments: the digits classifiers and the language model.

The language model (:func:`train_language_model`, at the end) trains a
:class:`normlab.nn.TransformerLM` on the character corpus of :mod:`normlab.data` with Adam
and a warm-up schedule and returns its validation loss curve. For the digits, one :func:`fit`:

:func:`train_mlp` and :func:`train_cnn` build an :class:`normlab.nn.MLP` or
:class:`normlab.nn.CNN` with a given normalization from a seed, and :func:`fit` trains
it on :func:`digits` with a given batch size, optimizer, learning-rate rule and budget
(epochs or steps; optionally on simulated devices), then measures it::

    >>> from normlab.training import train_mlp
    >>> numbers = train_mlp(norm="batch", batch_size=32, seed=0, epochs=2)
    >>> sorted(numbers)[:3]
    ['diverged', 'evaluation', 'final_train_loss']

Budgets are counted in epochs, so every batch size sees the same number of
samples (``epochs * (1347 // B) * B``, the last partial batch of each epoch is
dropped) and a small batch takes proportionally more optimizer steps. The
learning rate follows a stated rule (:func:`learning_rate`):

* ``"linear"``: ``lr = base_lr * B / reference_batch_size`` (Goyal et al. 2017,
  the rule Wu & He 2018 use). For SGD the change of the weights over one epoch
  is ``-lr/B * sum of per-sample gradients``, so keeping ``lr / B`` fixed keeps
  the epoch's expected displacement fixed at every batch size.
* ``"sqrt"``: ``lr = base_lr * sqrt(B / reference_batch_size)``, the usual
  companion of Adam, whose update size does not grow with the gradient.
* ``"constant"``: ``lr = base_lr``.

Everything random (initialization, the order of the minibatches, the random
test batches of the train-mode evaluation) is drawn from ``seed``; the data
split is fixed. Same arguments, same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from numbers import Real

import numpy as np

from normlab import data, nn, parallel
from normlab.layers import BatchNorm, BatchRenorm

__all__ = [
    "HELD_OUT_SPLITS",
    "LM_OPTIMIZERS",
    "LR_RULES",
    "MIN_TRAINING_STEPS",
    "OPTIMIZERS",
    "LMTrainingSetup",
    "RenormSchedule",
    "TrainingSetup",
    "batchnorm_layers",
    "best_learning_rate",
    "digits",
    "evaluate_language_model",
    "fit",
    "learning_rate",
    "predict",
    "recompute_batchnorm_statistics",
    "running_statistics_kept",
    "scale_initial_weights",
    "statistics_batch_size",
    "train_cnn",
    "train_language_model",
    "train_mlp",
    "train_mode_predictions",
]

#: The learning-rate rules :func:`learning_rate` knows.
LR_RULES = ("linear", "sqrt", "constant")

#: The optimizers :func:`fit` knows.
OPTIMIZERS = ("sgd", "adam")

#: What :func:`fit` measures on: the test images, or validation images carved from the
#: training images (for choosing learning rates without touching the test set).
EVALUATIONS = ("test", "validation")

#: A run with fewer optimizer steps than this gets a warning: the network has hardly left
#: its initialization, and under the linear rule a large batch takes these few steps at a
#: large learning rate, so its accuracy says little about the batch size itself.
MIN_TRAINING_STEPS = 20

#: Inference is done in chunks of this many samples (eval mode: the result does
#: not depend on the chunking).
_EVAL_CHUNK = 512


@dataclass(frozen=True)
class TrainingSetup:
    """How the MLP is trained, apart from norm, batch size and seed (the swept axes).

    The arguments of :func:`train_mlp` of the same names; an experiment's Config
    holds one (``training: TrainingSetup = TrainingSetup(...)``) and adds its
    fields to every run dict, so they are part of each run's cache key.
    Construction checks the values and raises ``ValueError`` on a bad one.
    """

    epochs: int = 5
    hidden: int = 64
    depth: int = 2
    optimizer: str = "sgd"
    base_lr: float = 0.1
    lr_rule: str = "linear"
    reference_batch_size: int = 32
    momentum: float = 0.9
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        for name in ("epochs", "hidden", "depth", "reference_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"training.{name} must be an integer ≥ 1, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"training.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"
            )
        if self.lr_rule not in LR_RULES:
            raise ValueError(f"training.lr_rule must be one of {LR_RULES}, got {self.lr_rule!r}")
        if not self.base_lr > 0:
            raise ValueError(f"training.base_lr must be > 0, got {self.base_lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"training.momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 < self.bn_momentum <= 1:
            raise ValueError(f"training.bn_momentum must be in (0, 1], got {self.bn_momentum!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def lr_formula(self) -> str:
        """The learning-rate rule as it is printed on the figures, e.g. 'lr = 0.1·B/32'."""
        base, reference = f"{self.base_lr:g}", self.reference_batch_size
        if self.lr_rule == "linear":
            return f"lr = {base}·B/{reference} (linear scaling)"
        if self.lr_rule == "sqrt":
            return f"lr = {base}·√(B/{reference}) (square-root scaling)"
        return f"lr = {base} (constant)"

    def steps(self, batch_size: int) -> int:
        """Optimizer steps :func:`train_mlp` takes at ``batch_size`` (partial batches dropped)."""
        return self.epochs * (len(digits().x_train) // batch_size)

    def samples_seen(self, batch_size: int) -> int:
        """Training samples :func:`train_mlp` passes at ``batch_size``: steps × batch size."""
        return self.steps(batch_size) * batch_size

    def describe(self, batch_sizes) -> str:
        """One line for a figure caption: model, optimizer, learning-rate rule, budget.

        The budget is what the runs at ``batch_sizes`` see: the last partial batch of
        each epoch is dropped, so the samples seen differ a little between batch sizes.
        """
        optimizer = f"SGD, momentum {self.momentum:g}" if self.optimizer == "sgd" else "Adam"
        samples = sorted({self.samples_seen(size) for size in batch_sizes})
        seen = f"{samples[0]:,}" if len(samples) == 1 else f"{samples[0]:,}–{samples[-1]:,}"
        at_every = " at every B" if len(batch_sizes) > 1 else ""
        return (
            f"MLP 64→{self.hidden}×{self.depth}→10 on digits; {optimizer}; "
            f"{self.lr_formula()}, constant over training; "
            f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}{at_every} "
            f"({seen} samples seen)"
        )

    def few_steps(self, batch_sizes) -> list[str]:
        """A warning for each batch size whose run takes fewer than :data:`MIN_TRAINING_STEPS`."""
        warnings = []
        for size in batch_sizes:
            steps = self.steps(size)
            if steps < MIN_TRAINING_STEPS:
                lr = learning_rate(self.lr_rule, self.base_lr, size, self.reference_batch_size)
                warnings.append(
                    f"batch size {size} takes only {steps} optimizer step{'s' * (steps != 1)} "
                    f"({self.epochs} epoch{'s' * (self.epochs != 1)} of "
                    f"{len(digits().x_train)} images) at lr {lr:g}, fewer than "
                    f"{MIN_TRAINING_STEPS}: its accuracy says little; use more epochs "
                    "(training=TrainingSetup(epochs=...)) or smaller batch sizes"
                )
        return warnings


@dataclass(frozen=True)
class RenormSchedule:
    """Batch Renorm's clipping limits over training: the shape of Ioffe's (2017) schedule.

    Ioffe trains with r_max = 1 and d_max = 0 (exactly BatchNorm) for the first 5,000
    steps, then relaxes the limits gradually, reaching r_max = 3 at 40,000 steps and
    d_max = 5 at 25,000 steps. Here the same shape is laid over a run of any length, with
    those step counts read as fractions of the run (in thousands of steps per 100,000):
    BatchNorm alone for the first ``start`` of the steps, then linear ramps that reach
    ``r_max`` at ``r_max_at`` and ``d_max`` at ``d_max_at``, held from there on::

        r_max(t) = 1 + (r_max - 1) * clip((t - start) / (r_max_at - start), 0, 1)
        d_max(t) =     d_max       * clip((t - start) / (d_max_at - start), 0, 1)

    with ``t = step / total_steps``. :func:`fit` sets the limits of every
    :class:`~normlab.layers.BatchRenorm` of the model before each step; without a schedule
    a BatchRenorm keeps the limits it was built with (BatchNorm at its defaults).
    Construction checks the values (ValueError).

    >>> schedule = RenormSchedule()
    >>> [schedule.limits(step, 100) for step in (0, 5, 25, 40, 99)]
    [(1.0, 0.0), (1.0, 0.0), (2.142857142857143, 5.0), (3.0, 5.0), (3.0, 5.0)]
    """

    r_max: float = 3.0
    d_max: float = 5.0
    start: float = 0.05
    r_max_at: float = 0.40
    d_max_at: float = 0.25

    def __post_init__(self) -> None:
        if not (isinstance(self.r_max, (int, float)) and self.r_max >= 1):
            raise ValueError(f"renorm_schedule.r_max must be a number ≥ 1, got {self.r_max!r}")
        if not (isinstance(self.d_max, (int, float)) and self.d_max >= 0):
            raise ValueError(f"renorm_schedule.d_max must be a number ≥ 0, got {self.d_max!r}")
        if not 0 <= self.start < min(self.r_max_at, self.d_max_at) <= 1:
            raise ValueError(
                "renorm_schedule needs 0 ≤ start < r_max_at, d_max_at ≤ 1 (fractions of the "
                f"run), got start={self.start!r}, r_max_at={self.r_max_at!r}, "
                f"d_max_at={self.d_max_at!r}"
            )
        if not max(self.r_max_at, self.d_max_at) <= 1:
            raise ValueError(
                f"renorm_schedule: r_max_at and d_max_at must be ≤ 1, got {self.r_max_at!r}, "
                f"{self.d_max_at!r}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def limits(self, step: int, total_steps: int) -> tuple[float, float]:
        """(r_max, d_max) for step ``step`` (0-based) of ``total_steps``."""
        t = step / max(total_steps, 1)

        def ramp(reached_at: float) -> float:
            return float(np.clip((t - self.start) / (reached_at - self.start), 0.0, 1.0))

        return 1.0 + (self.r_max - 1.0) * ramp(self.r_max_at), self.d_max * ramp(self.d_max_at)

    def describe(self) -> str:
        """The schedule in one line, for a caption."""
        return (
            f"r_max 1 → {self.r_max:g} and d_max 0 → {self.d_max:g}, BatchNorm alone for the "
            f"first {self.start:.0%} of the steps, reached at {self.r_max_at:.0%} and "
            f"{self.d_max_at:.0%} (Ioffe's 5k/40k/25k steps as fractions)"
        )


@lru_cache(maxsize=2)
def digits(evaluation: str = "test") -> data.DigitsSplit:
    """The fixed digits split, loaded once per process.

    ``"test"``: 1347 training and 450 test images. ``"validation"``: the 1347 training
    images split again into 1077 for training and 270 held out in the *test* arrays
    (:func:`normlab.data.load_digits_validation_split`), so learning rates and other
    choices can be made without looking at the test images.
    """
    if evaluation == "test":
        return data.load_digits_split()
    if evaluation == "validation":
        return data.load_digits_validation_split()
    raise ValueError(f"evaluation must be one of {EVALUATIONS}, got {evaluation!r}")


def check_training_batch_sizes(batch_sizes, *, trains_batchnorm: bool) -> None:
    """Raise ValueError (one line) for batch sizes the digits MLP cannot train with.

    BatchNorm needs two samples per batch for a variance, and no batch can be
    larger than the training split (the last partial batch is dropped).
    """
    if trains_batchnorm and min(batch_sizes) < 2:
        raise ValueError(
            "BatchNorm cannot train with batch size 1 (one sample has no batch variance); "
            f"use batch sizes ≥ 2, got {tuple(batch_sizes)}"
        )
    training_set_size = len(digits().x_train)
    if max(batch_sizes) > training_set_size:
        raise ValueError(
            f"batch sizes must be ≤ the {training_set_size} training images, got {max(batch_sizes)}"
        )


def learning_rate(rule: str, base_lr: float, batch_size: int, reference_batch_size: int) -> float:
    """The learning rate at ``batch_size`` under ``rule`` (see the module docstring).

    >>> learning_rate("linear", 0.1, 2, 32)
    0.00625
    """
    if rule == "linear":
        return base_lr * batch_size / reference_batch_size
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size / reference_batch_size)
    if rule == "constant":
        return base_lr
    raise ValueError(f"learning-rate rule must be one of {LR_RULES}, got {rule!r}")


def best_learning_rate(learning_rates, validation_accuracy) -> float:
    """The learning rate with the highest median validation accuracy over seeds.

    ``validation_accuracy`` has shape (learning rates, seeds): each from a run with
    ``evaluation="validation"`` (:func:`digits`), so the choice never sees the test
    images. Ties go to the smaller learning rate.

    >>> best_learning_rate([0.01, 0.1, 1.0], [[0.90, 0.92], [0.95, 0.93], [0.94, 0.94]])
    0.1
    """
    learning_rates = list(learning_rates)
    accuracy = np.asarray(validation_accuracy, dtype=float)
    if accuracy.ndim != 2 or len(accuracy) != len(learning_rates):
        raise ValueError(
            f"validation_accuracy must have shape (learning rates = {len(learning_rates)}, "
            f"seeds), got {accuracy.shape}"
        )
    medians = np.median(accuracy, axis=1)
    best = max(range(len(learning_rates)), key=lambda i: (medians[i], -learning_rates[i]))
    return float(learning_rates[best])


def batchnorm_layers(model: nn.Sequential) -> list:
    """The BatchNorm layers of ``model``, in order (empty for other norms)."""
    return [layer for layer in model.modules() if isinstance(layer, BatchNorm)]


def predict(model: nn.Sequential, x: np.ndarray) -> np.ndarray:
    """Class predictions of ``model`` in eval mode (running statistics for BatchNorm)."""
    model.eval()
    logits = [model(x[start : start + _EVAL_CHUNK]) for start in range(0, len(x), _EVAL_CHUNK)]
    return np.argmax(np.concatenate(logits), axis=1)


def recompute_batchnorm_statistics(model: nn.Sequential, x: np.ndarray) -> None:
    """Replace every BatchNorm's running mean and variance by the statistics of ``x``.

    Resets the running averages, switches to ``momentum=None`` (a cumulative average)
    and runs ``x`` through the model in train mode as one batch, with no weight update;
    then restores each layer's momentum and sets eval mode. Each BatchNorm's running
    mean and variance are then exactly the mean and (unbiased) variance of its input
    over ``x``, computed with the layers below already normalized by their own
    statistics of ``x``.

    With training images this is *precise BN* (Wu & Johnson 2021, "Rethinking 'Batch'
    in BatchNorm"): population statistics for the final weights, in place of running
    averages of batch statistics taken with older weights. With unlabelled images of a
    new domain (the test images under a distribution shift) it is *AdaBN* (Li et al.
    2016, "Revisiting Batch Normalization For Practical Domain Adaptation"). The
    weights are not touched.
    """
    norms = batchnorm_layers(model)
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    model(x)  # forward only: the weights are not touched
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    model.eval()


def train_mode_predictions(
    model: nn.Sequential, x: np.ndarray, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Predictions with every BatchNorm normalizing each test batch by its own statistics.

    The test set is split at random into batches of ``batch_size`` (a leftover
    of one sample joins the previous batch, since one sample has no batch
    variance); each batch is run in train mode. Ghost batches are switched off for
    the pass, so each test batch is one statistics batch (:func:`fit` passes the
    statistics batch of training, :func:`statistics_batch_size`). The running
    statistics are saved and restored, so the model is unchanged afterwards. Norms
    other than BatchNorm give the same predictions as in eval mode.
    """
    norms = batchnorm_layers(model)
    ghost_sizes = [layer.ghost_batch_size for layer in norms]
    order = rng.permutation(len(x))
    starts = list(range(0, len(x), batch_size))
    if len(x) - starts[-1] == 1 and len(starts) > 1:
        starts.pop()  # the last sample joins the batch before it
    bounds = [*starts, len(x)]
    predictions = np.empty(len(x), dtype=np.int64)
    with running_statistics_kept(model):
        for layer in norms:
            layer.ghost_batch_size = None
        try:
            model.train()
            for start, stop in pairwise(bounds):
                batch = order[start:stop]
                predictions[batch] = np.argmax(model(x[batch]), axis=1)
        finally:
            for layer, ghost in zip(norms, ghost_sizes, strict=True):
                layer.ghost_batch_size = ghost
    model.eval()
    return predictions


def statistics_batch_size(
    model: nn.Sequential, batch_size: int, *, devices: int = 1, sync_batchnorm: bool = False
) -> int:
    """How many samples each BatchNorm statistic of one training step is taken over.

    The SGD batch B on one device or with synchronized BatchNorm, B/k with per-device
    BatchNorm on k devices, and at most g with ghost batches of g.

    >>> statistics_batch_size(nn.MLP(4, 8, 2, rng=0, norm_kwargs={"ghost_batch_size": 4}), 32)
    4
    """
    size = batch_size if sync_batchnorm else batch_size // devices
    ghosts = [layer.ghost_batch_size for layer in batchnorm_layers(model) if layer.ghost_batch_size]
    return min([size, *ghosts])


@contextmanager
def running_statistics_kept(model: nn.Sequential):
    """A block in which ``model`` may run forwards in train mode without changing its BatchNorms.

    Every BatchNorm's running mean, running variance and batch count are saved on entry
    and put back on exit: for measurements in train mode (batch statistics) that must
    leave the model as it was, during training or after it.
    """
    norms = batchnorm_layers(model)
    saved = [
        (layer.running_mean.copy(), layer.running_var.copy(), layer.num_batches_tracked)
        for layer in norms
    ]
    try:
        yield model
    finally:
        for layer, (mean, var, count) in zip(norms, saved, strict=True):
            layer.running_mean[...], layer.running_var[...] = mean, var
            layer.num_batches_tracked = count


def scale_initial_weights(model, factor: float) -> None:
    """Multiply the weight of every ``Linear`` and ``Conv2d`` of ``model`` by ``factor``, in place.

    The initialization-scale axis of the learning-rate maps: ``factor = 1`` leaves
    He/Glorot (or torch's) initialization as it is, ``factor = 0.01`` makes every weight a
    hundred times smaller. Biases (which start at 0) and the normalization layers' γ and β
    are left alone. ``factor`` must be a finite number > 0.
    """
    valid = isinstance(factor, Real) and not isinstance(factor, bool)
    if not (valid and math.isfinite(factor) and factor > 0):
        raise ValueError(f"init_scale must be a finite number > 0, got {factor!r}")
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            layer.params["weight"][...] *= layer.params["weight"].dtype.type(factor)


def _make_optimizer(name: str, model, lr: float, momentum: float, weight_decay: float = 0.0):
    if name == "sgd":
        return nn.SGD(
            model.params, model.grads, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    if name == "adam":
        return nn.Adam(model.params, model.grads, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def train_mlp(
    *,
    norm: str,
    batch_size: int,
    seed: int,
    epochs: int,
    hidden: int = 64,
    depth: int = 2,
    norm_kwargs: dict | None = None,
    bn_momentum: float = 0.1,
    init_scale: float = 1.0,
    return_model: bool = False,
    **fitting,
):
    """Train the digits MLP once and measure it: :class:`normlab.nn.MLP` through :func:`fit`.

    Parameters
    ----------
    norm : a kind of :func:`normlab.make_norm` (``"none"``, ``"batch"``, ``"layer"``, ...).
    batch_size : int ≥ 1 (≥ 2 for BatchNorm, which needs a batch variance).
    seed : int, seeds the initialization, the minibatch order and the random
        test batches of the train-mode evaluation.
    epochs : int, passes over the training images: the samples budget (see ``steps``).
    hidden, depth : width and number of the hidden ``Linear → norm → ReLU`` blocks.
    norm_kwargs : dict, optional, more options of the norm (e.g. ``ghost_batch_size``).
    bn_momentum : BatchNorm's running-statistics momentum (PyTorch convention).
    init_scale : every Linear weight is multiplied by this after initialization
        (:func:`scale_initial_weights`); 1 keeps the He/Glorot initialization.
    return_model : also return the trained model (in eval mode).
    **fitting : the options of :func:`fit` (optimizer, base_lr, lr_rule, steps,
        evaluation, devices, on_step, ...).

    Returns
    -------
    dict (and the model, as ``(dict, model)``, if ``return_model``): see :func:`fit`.
    """
    split = digits(fitting.get("evaluation", "test"))
    rng = np.random.default_rng(seed)
    model = nn.MLP(
        split.num_features,
        hidden,
        split.num_classes,
        norm=norm,
        rng=rng,
        depth=depth,
        # momentum is BatchNorm's option: the other kinds ignore it
        norm_kwargs={"momentum": bn_momentum, **(norm_kwargs or {})},
    )
    scale_initial_weights(model, init_scale)  # × 1: the initialization unchanged, exactly
    numbers = fit(model, split, rng, batch_size=batch_size, epochs=epochs, **fitting)
    return (numbers, model) if return_model else numbers


def train_cnn(
    *,
    norm: str,
    batch_size: int,
    seed: int,
    epochs: int,
    widths: tuple[int, ...] = (16, 32),
    norm_kwargs: dict | None = None,
    bn_momentum: float = 0.1,
    init_scale: float = 1.0,
    return_model: bool = False,
    **fitting,
):
    """Train a small digits CNN (:class:`normlab.nn.CNN` on (N, 8, 8, 1) images) and measure it.

    The same as :func:`train_mlp` with ``widths`` (channels of the ``Conv2d(3×3) → norm →
    ReLU → MaxPool2d(2)`` blocks) in place of ``hidden`` and ``depth``; ``init_scale``
    multiplies every Conv2d and Linear weight after initialization. ``norm="layer"``
    is LayerNorm over the channels at each position; GroupNorm's groups come from
    :func:`normlab.layers.default_num_groups` unless ``norm_kwargs`` has ``num_groups``.
    """
    split = digits(fitting.get("evaluation", "test"))
    rng = np.random.default_rng(seed)
    model = nn.CNN(
        1,
        split.num_classes,
        widths=tuple(widths),
        norm=norm,
        rng=rng,
        norm_kwargs={"momentum": bn_momentum, **(norm_kwargs or {})},
    )
    scale_initial_weights(model, init_scale)  # × 1: the initialization unchanged, exactly
    numbers = fit(model, split, rng, batch_size=batch_size, epochs=epochs, images=True, **fitting)
    return (numbers, model) if return_model else numbers


def fit(
    model,
    split: data.DigitsSplit,
    rng: np.random.Generator,
    *,
    batch_size: int,
    epochs: int,
    steps: int | None = None,
    optimizer: str = "sgd",
    base_lr: float = 0.1,
    lr_rule: str = "linear",
    reference_batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    devices: int = 1,
    sync_batchnorm: bool = False,
    evaluation: str = "test",
    images: bool = False,
    frozen_batchnorm: bool = False,
    renorm_schedule: RenormSchedule | None = None,
    on_step: Callable[[int, nn.Sequential, float, np.ndarray, np.ndarray], None] | None = None,
) -> dict:
    """Train ``model`` on ``split`` with SGD or Adam, then measure it: the one training loop.

    Parameters
    ----------
    model : a classifier (MLP or CNN) built from ``rng``, in training mode.
    split : the data; its *test* arrays are what is measured (the validation images when
        ``evaluation="validation"``, see :func:`digits`).
    rng : the same Generator the model was built from: the minibatch order and the random
        test batches of the train-mode evaluation are drawn from it next.
    batch_size : the SGD batch size B.
    epochs : passes over the training images (the last partial batch of each dropped).
    steps : int, optional: a budget in optimizer steps instead; epochs then repeat until
        ``steps`` are taken (an epoch cut short at the end). "Equal steps" compares batch
        sizes at the same number of updates, "equal epochs" at the same samples seen.
    optimizer, base_lr, lr_rule, reference_batch_size, momentum, weight_decay : the
        update; the learning rate is ``learning_rate(lr_rule, base_lr, B, reference)``.
    devices, sync_batchnorm : with ``devices = k > 1`` every step is
        :func:`normlab.parallel.data_parallel_step` on k simulated devices of B/k
        samples each, BatchNorm per device (the statistics batch is B/k) or
        synchronized (over all B).
    evaluation : ``"test"`` or ``"validation"``; only recorded here (it chose ``split``).
    images : feed (N, 8, 8, 1) images (a CNN) instead of (N, 64) vectors.
    frozen_batchnorm : keep every BatchNorm in eval mode while the rest of the model
        trains (*frozen* BatchNorm, as when fine-tuning with small batches): each normalizes
        with its running statistics, which eval mode never updates, so it is a fixed
        affine map per feature whose γ and β still learn. A batch of one is then fine.
    renorm_schedule : :class:`RenormSchedule`, optional: sets r_max and d_max of every
        :class:`~normlab.layers.BatchRenorm` before each step. Without one, a model with
        Batch Renorm at r_max = 1, d_max = 0 trains exactly as BatchNorm, and a
        ``UserWarning`` says so.
    on_step : callable ``on_step(step, model, loss, x, y)``, optional, called after each
        optimizer step: the steps taken so far (1, 2, ...), the model, the step's training
        loss (computed before the update) and the batch it was computed on. For
        measurements during training (loss curves, probes of the loss surface, a copy
        measured mid-training). Whatever it changes in the model it must restore, and it
        must draw nothing from ``rng``, or the training changes.

    Returns
    -------
    dict with
        ``test_accuracy_eval``: accuracy on the split's test (or validation) images in
        eval mode (running statistics); ``test_correct``: 1/0 per test image, for paired
        comparisons (:mod:`normlab.stats`); ``test_accuracy_train_mode``: accuracy in
        train mode, each random test batch of the statistics batch size (B, B/k per
        device, or g for ghost batches) normalized by its own statistics (with
        ``frozen_batchnorm``, which trains in eval mode, the eval-mode accuracy);
        ``train_accuracy_eval``; ``final_train_loss``: mean loss over the last epoch's
        steps; ``steps``, ``samples_seen``, ``learning_rate``; ``diverged``: True if the
        loss became NaN or inf (training stops there; the accuracies are then those of
        the broken network).
    """
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation must be one of {EVALUATIONS}, got {evaluation!r}")
    trains_batchnorm = not frozen_batchnorm and any(
        isinstance(layer, BatchNorm) for layer in model.modules()
    )
    if trains_batchnorm and batch_size // devices < 2 and not sync_batchnorm:
        raise ValueError(
            "BatchNorm cannot train with one sample per batch (one sample has no variance): "
            f"batch size {batch_size} on {devices} device(s)"
        )
    if batch_size % devices:
        raise ValueError(f"batch size {batch_size} must be a multiple of devices={devices}")
    renorm_layers = [layer for layer in model.modules() if isinstance(layer, BatchRenorm)]
    if renorm_schedule is None and any(
        layer.r_max == 1 and layer.d_max == 0 for layer in renorm_layers
    ):
        warnings.warn(
            "fit: the model's BatchRenorm layers have r_max=1, d_max=0, where Batch Renorm is "
            "exactly BatchNorm, and no renorm_schedule relaxes them; pass "
            "renorm_schedule=RenormSchedule() for the paper's schedule",
            UserWarning,
            stacklevel=2,
        )
    x_train = split.x_train_images if images else split.x_train
    x_test = split.x_test_images if images else split.x_test
    lr = learning_rate(lr_rule, base_lr, batch_size, reference_batch_size)
    opt = _make_optimizer(optimizer, model, lr, momentum, weight_decay)

    model.train()
    if frozen_batchnorm:
        for layer in batchnorm_layers(model):
            layer.eval()
    planned_steps = steps if steps is not None else epochs * (len(x_train) // batch_size)
    taken, diverged = 0, False
    epoch_losses: list[float] = []
    budget_epochs = epochs if steps is None else math.inf
    epoch = 0
    # A diverging run overflows on its way to a non-finite loss, which stops it (diverged)
    with np.errstate(over="ignore", invalid="ignore"):
        while epoch < budget_epochs and not diverged and (steps is None or taken < steps):
            epoch += 1
            epoch_losses = []
            for batch in data.iterate_minibatches(len(x_train), batch_size, rng):
                if renorm_schedule is not None:
                    r_max, d_max = renorm_schedule.limits(taken, planned_steps)
                    for layer in renorm_layers:
                        layer.r_max, layer.d_max = r_max, d_max
                if devices == 1:
                    loss, dlogits = nn.softmax_cross_entropy(
                        model(x_train[batch]), split.y_train[batch]
                    )
                    if math.isfinite(loss):
                        model.backward(dlogits)
                else:
                    loss = parallel.data_parallel_step(
                        model,
                        x_train[batch],
                        split.y_train[batch],
                        devices=devices,
                        sync_batchnorm=sync_batchnorm,
                    ).loss
                if not math.isfinite(loss):
                    diverged = True
                    break
                opt.step()
                epoch_losses.append(loss)
                taken += 1
                if on_step is not None:
                    on_step(taken, model, loss, x_train[batch], split.y_train[batch])
                if steps is not None and taken >= steps:
                    break

    with np.errstate(invalid="ignore", over="ignore"):
        test_eval = predict(model, x_test)
        train_eval = predict(model, x_train)
        if frozen_batchnorm:  # it trained in eval mode: that is its training-mode function
            test_train_mode = test_eval
        else:
            statistics_batch = statistics_batch_size(
                model, batch_size, devices=devices, sync_batchnorm=sync_batchnorm
            )
            test_train_mode = train_mode_predictions(model, x_test, statistics_batch, rng)
    correct = test_eval == split.y_test
    return {
        "test_accuracy_eval": float(np.mean(correct)),
        "test_correct": correct.astype(int).tolist(),
        "test_accuracy_train_mode": float(np.mean(test_train_mode == split.y_test)),
        "train_accuracy_eval": float(np.mean(train_eval == split.y_train)),
        "final_train_loss": float(np.mean(epoch_losses)) if epoch_losses else None,
        "steps": taken,
        "samples_seen": taken * batch_size,
        "learning_rate": lr,
        "diverged": diverged,
        "evaluation": evaluation,
    }


# ---------------------------------------------------------------------------
# The language model on the character corpus
# ---------------------------------------------------------------------------

#: The optimizers :func:`train_language_model` knows.
LM_OPTIMIZERS = ("adam", "adamw")

#: Windows per forward pass when a language model is evaluated (eval mode: the loss
#: does not depend on the chunking).
_LM_EVAL_BATCH = 64


@dataclass(frozen=True)
class LMTrainingSetup:
    """How :func:`train_language_model` trains: steps, batches, Adam and its warm-up, validation.

    Every field enters an experiment's run dicts (``to_dict``), so it is part of each run's
    cache key. Construction checks the values and raises ``ValueError`` on a bad one.

    Attributes
    ----------
    steps : optimizer updates.
    batch_size, context_length : each update sees ``batch_size`` random windows of
        ``context_length`` characters of the training split (and their next characters).
    lr, warmup_steps, decay, min_lr : the learning rate, a
        :class:`~normlab.nn.WarmupSchedule` over ``steps``.
    optimizer : ``"adam"`` or ``"adamw"`` (decoupled ``weight_decay``).
    beta1, beta2, adam_eps, weight_decay : Adam's.
    eval_every : validation loss every this many steps (and at step 0 and the last step).
    eval_windows : how many validation windows of ``context_length`` to evaluate on
        (None: the whole validation split), the same windows every time.
    min_length : None (default) or an int: with None every training window has
        ``context_length`` characters; with an int the windows have lengths drawn
        uniformly from ``[min_length, context_length]``, right-padded within each batch,
        with a padding mask (:func:`data.length_batches`).
    bucketed : with ``min_length``, group the windows of ``pool_batches`` batches at a time
        by length (little padding) instead of at random (:func:`data.length_batches`).
    pool_batches : int, the batches drawn and grouped together with ``min_length``.
    """

    steps: int = 1000
    batch_size: int = 32
    context_length: int = 64
    lr: float = 3e-3
    warmup_steps: int = 100
    decay: str = "cosine"
    min_lr: float = 0.0
    optimizer: str = "adam"
    beta1: float = 0.9
    beta2: float = 0.99
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    eval_every: int = 100
    eval_windows: int | None = None
    min_length: int | None = None
    bucketed: bool = False
    pool_batches: int = 16

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "context_length", "eval_every", "pool_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"training.{name} must be an integer ≥ 1, got {value!r}")
        if self.eval_windows is not None and (
            not isinstance(self.eval_windows, int) or self.eval_windows < 1
        ):
            raise ValueError(
                f"training.eval_windows must be None or an integer ≥ 1, got {self.eval_windows!r}"
            )
        if self.optimizer not in LM_OPTIMIZERS:
            raise ValueError(
                f"training.optimizer must be one of {LM_OPTIMIZERS}, got {self.optimizer!r}"
            )
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(
                f"training.beta1 and beta2 must be in [0, 1), got {self.beta1!r}, {self.beta2!r}"
            )
        if self.weight_decay < 0:
            raise ValueError(f"training.weight_decay must be ≥ 0, got {self.weight_decay!r}")
        if self.min_length is not None and (
            not isinstance(self.min_length, int) or not 1 <= self.min_length <= self.context_length
        ):
            raise ValueError(
                f"training.min_length must be None or an integer in [1, context_length="
                f"{self.context_length}], got {self.min_length!r}"
            )
        self.schedule()  # checks lr, warmup_steps, decay and min_lr

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def schedule(self) -> nn.WarmupSchedule:
        """The learning rate of every step."""
        total = max(self.steps, self.warmup_steps + 1)
        return nn.WarmupSchedule(
            self.lr, self.warmup_steps, total_steps=total, decay=self.decay, min_lr=self.min_lr
        )

    def training_batches(self, ids: np.ndarray, rng: np.random.Generator):
        """Endless ``(inputs, targets, mask)`` batches of the training split ``ids``.

        ``mask`` is None for fixed-length windows (``min_length=None``).
        """
        while True:
            if self.min_length is None:
                inputs, targets = data.sample_windows(
                    ids, self.batch_size, self.context_length, rng
                )
                yield inputs, targets, None
                continue
            pool = data.length_batches(
                ids,
                self.pool_batches,
                self.batch_size,
                self.min_length,
                self.context_length,
                rng,
                bucketed=self.bucketed,
            )
            for batch in pool:
                yield batch.ids, batch.targets, batch.mask

    def make_optimizer(self, model: nn.Module):
        optimizer_class = nn.AdamW if self.optimizer == "adamw" else nn.Adam
        return optimizer_class(
            model.params,
            model.grads,
            lr=self.lr,
            betas=(self.beta1, self.beta2),
            eps=self.adam_eps,
            weight_decay=self.weight_decay,
        )


#: Where :func:`train_language_model` measures: the validation split of the corpus, or
#: the tuning text held out of its training split (:func:`data.load_tuning_corpus`).
HELD_OUT_SPLITS = ("validation", "tuning")


def evaluate_language_model(
    model: nn.TransformerLM,
    ids: np.ndarray,
    context_length: int,
    max_windows: int | None = None,
    *,
    batch_statistics_of: int | None = None,
) -> float:
    """Mean loss in nats per character over the :func:`data.evaluation_windows` of ``ids``.

    The model runs in eval mode (BatchNorm: running statistics) on consecutive windows of
    ``context_length`` characters; every position of every window counts, so a position
    near a window's start has little context. The mode is restored afterwards.

    ``batch_statistics_of=B``: instead, every BatchNorm normalizes each group of ``B``
    consecutive windows with the group's own statistics (train mode, as in training with
    batches of ``B``; the last group may be smaller). The running statistics are saved
    and restored, so the model is unchanged; for the other norms the loss is the same.
    """
    inputs, targets = data.evaluation_windows(ids, context_length, max_windows)
    was_training = model.training
    chunk_size = _LM_EVAL_BATCH if batch_statistics_of is None else batch_statistics_of
    norms = batchnorm_layers(model)
    saved = [
        (layer.running_mean.copy(), layer.running_var.copy(), layer.num_batches_tracked)
        for layer in norms
        if layer.has_running_stats
    ]
    model.train(batch_statistics_of is not None)
    total, count = 0.0, 0
    try:
        for start in range(0, len(inputs), chunk_size):
            chunk = slice(start, start + chunk_size)
            loss, _ = nn.softmax_cross_entropy(model(inputs[chunk]), targets[chunk])
            total += loss * targets[chunk].size
            count += targets[chunk].size
    finally:
        model.train(was_training)
        tracked = [layer for layer in norms if layer.has_running_stats]
        for layer, (mean, var, batches) in zip(tracked, saved, strict=True):
            layer.running_mean[...], layer.running_var[...] = mean, var
            layer.num_batches_tracked = batches
    return total / count


def train_language_model(
    model_config: nn.TransformerLMConfig,
    setup: LMTrainingSetup = LMTrainingSetup(),
    *,
    seed: int,
    on_step=None,
    return_model: bool = False,
    held_out: str = "validation",
):
    """Train a :class:`~normlab.nn.TransformerLM` on the character corpus; the loss curve.

    Each of ``setup.steps`` updates: a batch of random training windows (of fixed length,
    or of variable length with a padding mask: ``setup.min_length``), forward, masked
    cross-entropy, backward, ``on_step(step, model, loss, inputs, targets)`` if given (the
    gradients are in ``model.grads``, before the update: the place to measure them), the
    learning rate of the warm-up schedule, one Adam step. The validation loss (nats per
    character, eval mode) is measured at step 0, every ``setup.eval_every`` steps and at the
    last step.

    The initialization and the batches come from two streams of ``seed``, so models that
    differ only in their norm see the same batches in the same order. Same arguments,
    same numbers.

    Parameters
    ----------
    model_config : :class:`~normlab.nn.TransformerLMConfig`; its ``vocab_size`` must be the
        corpus's (``data.load_char_corpus().vocab_size``).
    setup : :class:`LMTrainingSetup`.
    seed : int.
    on_step : callable ``(step, model, loss, inputs, targets)``, optional: the same
        signature as :func:`fit`'s, called after the backward and before the update.
    return_model : also return the trained model.
    held_out : ``"validation"`` (default): train on the training split, measure on the
        validation split; ``"tuning"``: train on the training split without its tuning
        blocks and measure on those (:func:`data.load_tuning_corpus`), for choosing a
        learning rate without looking at the validation split.

    Returns
    -------
    dict (and the model, as ``(dict, model)``, if ``return_model``) with
        ``eval_steps``, ``validation_loss``: the curve, in nats per character;
        ``train_loss``: the mean training loss over the steps since the previous point
        (None at step 0); ``learning_rate`` at each point;
        ``final_validation_loss`` (None if the run diverged: a non-finite training or
        validation loss stops it, and the curve keeps the finite points before);
        ``unigram_baseline`` (nats per character, see
        :meth:`data.CharCorpus.unigram_baseline`); ``diverged``; ``steps`` done;
        ``corpus``: :func:`data.corpus_fingerprint` (the text differs between Pythons);
        ``held_out``: where the curve was measured.
    """
    if held_out not in HELD_OUT_SPLITS:
        raise ValueError(
            f"train_language_model: held_out must be one of {HELD_OUT_SPLITS}, got {held_out!r}."
        )
    corpus = data.load_char_corpus() if held_out == "validation" else data.load_tuning_corpus()
    if model_config.vocab_size != corpus.vocab_size:
        raise ValueError(
            f"train_language_model: model_config.vocab_size must be the corpus's "
            f"{corpus.vocab_size}, got {model_config.vocab_size}."
        )
    if model_config.positions == "learned" and setup.context_length > model_config.context_length:
        raise ValueError(
            f"train_language_model: training windows of {setup.context_length} characters do "
            f"not fit the model's learned positions (context_length="
            f"{model_config.context_length})."
        )
    model = nn.TransformerLM.from_config(model_config, rng=np.random.default_rng([seed, 0]))
    batch_rng = np.random.default_rng([seed, 1])
    optimizer = setup.make_optimizer(model)
    schedule = setup.schedule()

    def validation_loss() -> float:
        return evaluate_language_model(
            model, corpus.validation, setup.context_length, setup.eval_windows
        )

    curve = {"eval_steps": [0], "validation_loss": [validation_loss()], "train_loss": [None]}
    curve["learning_rate"] = [schedule.lr_at(1)]
    recent_losses: list[float] = []
    model.train()
    diverged, steps_done = False, 0
    batches = setup.training_batches(corpus.train, batch_rng)
    for step in range(1, setup.steps + 1):
        inputs, targets, mask = next(batches)
        loss, dlogits = model.loss(inputs, targets, mask)
        if not math.isfinite(loss):
            diverged = True
            break
        model.backward(dlogits)
        if on_step is not None:
            on_step(step, model, loss, inputs, targets)
        optimizer.lr = schedule.lr_at(step)
        optimizer.step()
        steps_done = step
        recent_losses.append(loss)
        if step % setup.eval_every == 0 or step == setup.steps:
            loss_now = validation_loss()
            if not math.isfinite(loss_now):  # strict JSON: no inf or NaN in the results
                diverged = True
                break
            curve["eval_steps"].append(step)
            curve["validation_loss"].append(loss_now)
            curve["train_loss"].append(float(np.mean(recent_losses)))
            curve["learning_rate"].append(optimizer.lr)
            recent_losses = []
    results = {
        **curve,
        "final_validation_loss": None if diverged else curve["validation_loss"][-1],
        "unigram_baseline": corpus.unigram_baseline(),
        "diverged": diverged,
        "steps": steps_done,
        "corpus": dict(corpus.fingerprint),
        "held_out": held_out,
    }
    return (results, model) if return_model else results
