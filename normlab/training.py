"""The training loop shared by the experiments that train on the digits: one :func:`fit`.

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
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from numbers import Real

import numpy as np

from normlab import data, nn, parallel
from normlab.layers import BatchNorm

__all__ = [
    "LR_RULES",
    "MIN_TRAINING_STEPS",
    "OPTIMIZERS",
    "TrainingSetup",
    "batchnorm_layers",
    "digits",
    "fit",
    "learning_rate",
    "predict",
    "running_statistics_kept",
    "scale_initial_weights",
    "train_cnn",
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


def batchnorm_layers(model: nn.Sequential) -> list:
    """The BatchNorm layers of ``model``, in order (empty for other norms)."""
    return [layer for layer in model.modules() if isinstance(layer, BatchNorm)]


def predict(model: nn.Sequential, x: np.ndarray) -> np.ndarray:
    """Class predictions of ``model`` in eval mode (running statistics for BatchNorm)."""
    model.eval()
    logits = [model(x[start : start + _EVAL_CHUNK]) for start in range(0, len(x), _EVAL_CHUNK)]
    return np.argmax(np.concatenate(logits), axis=1)


def train_mode_predictions(
    model: nn.Sequential, x: np.ndarray, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Predictions with every BatchNorm normalizing each test batch by its own statistics.

    The test set is split at random into batches of ``batch_size`` (a leftover
    of one sample joins the previous batch, since one sample has no batch
    variance); each batch is run in train mode. The running statistics are
    saved and restored, so the model is unchanged afterwards. Norms other than
    BatchNorm give the same predictions as in eval mode.
    """
    order = rng.permutation(len(x))
    starts = list(range(0, len(x), batch_size))
    if len(x) - starts[-1] == 1 and len(starts) > 1:
        starts.pop()  # the last sample joins the batch before it
    bounds = [*starts, len(x)]
    predictions = np.empty(len(x), dtype=np.int64)
    with running_statistics_kept(model):
        model.train()
        for start, stop in pairwise(bounds):
            batch = order[start:stop]
            predictions[batch] = np.argmax(model(x[batch]), axis=1)
    model.eval()
    return predictions


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
    on_step: Callable[[int, float, np.ndarray, np.ndarray], None] | None = None,
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
    on_step : called after every optimizer step as ``on_step(step, loss, x, y)``: the
        number of steps taken so far (1, 2, ...), the step's training loss (computed
        before the update) and the batch it was computed on. For measurements during
        training (loss curves, probes of the loss surface); whatever it changes in the
        model it must restore, since training goes on from there.

    Returns
    -------
    dict with
        ``test_accuracy_eval``: accuracy on the split's test (or validation) images in
        eval mode (running statistics); ``test_correct``: 1/0 per test image, for paired
        comparisons (:mod:`normlab.stats`); ``test_accuracy_train_mode``: accuracy in
        train mode, each random test batch of B normalized by its own statistics;
        ``train_accuracy_eval``; ``final_train_loss``: mean loss over the last epoch's
        steps; ``steps``, ``samples_seen``, ``learning_rate``; ``diverged``: True if the
        loss became NaN or inf (training stops there; the accuracies are then those of
        the broken network).
    """
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation must be one of {EVALUATIONS}, got {evaluation!r}")
    trains_batchnorm = any(isinstance(layer, BatchNorm) for layer in model.modules())
    if trains_batchnorm and batch_size // devices < 2 and not sync_batchnorm:
        raise ValueError(
            "BatchNorm cannot train with one sample per batch (one sample has no variance): "
            f"batch size {batch_size} on {devices} device(s)"
        )
    if batch_size % devices:
        raise ValueError(f"batch size {batch_size} must be a multiple of devices={devices}")
    x_train = split.x_train_images if images else split.x_train
    x_test = split.x_test_images if images else split.x_test
    lr = learning_rate(lr_rule, base_lr, batch_size, reference_batch_size)
    opt = _make_optimizer(optimizer, model, lr, momentum, weight_decay)

    model.train()
    taken, diverged = 0, False
    epoch_losses: list[float] = []
    budget_epochs = epochs if steps is None else math.inf
    epoch = 0
    while epoch < budget_epochs and not diverged and (steps is None or taken < steps):
        epoch += 1
        epoch_losses = []
        for batch in data.iterate_minibatches(len(x_train), batch_size, rng):
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
                on_step(taken, loss, x_train[batch], split.y_train[batch])
            if steps is not None and taken >= steps:
                break

    with np.errstate(invalid="ignore", over="ignore"):
        test_eval = predict(model, x_test)
        train_eval = predict(model, x_train)
        test_train_mode = train_mode_predictions(model, x_test, batch_size, rng)
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
