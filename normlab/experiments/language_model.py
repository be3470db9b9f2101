"""What the language-model experiments share: their model and training fields, and two builders.

Every experiment that trains the character-level :class:`normlab.nn.TransformerLM` on the
corpus of :func:`normlab.data.load_char_corpus` (``placement_gradients``,
``placement_warmup``, ``lm_norms``, ``lm_batch_composition``) declares its Config as a
subclass of :class:`LanguageModelConfig` and redeclares only the defaults it changes
(``num_layers: int = integer(6, minimum=1)``) and the fields it adds. A run dict then holds
every one of these fields, and :func:`model_config` and :func:`training_setup` turn it into
the two objects :func:`normlab.training.train_language_model` takes::

    model = model_config(run, norm=run["norm"], norm_first=True)
    setup = training_setup(run, lr=run["lr"])

And how much BatchNorm's batch statistics fluctuate around its running statistics during
training: :class:`BatchStatisticsRecorder` (a step callback) and :func:`fluctuation`.

This module is no experiment itself (it is not in the registry).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from normlab import data, nn, training
from normlab.experiments.framework import ExperimentConfig, integer
from normlab.instruments import record_batch_statistics

__all__ = [
    "BatchStatisticsRecorder",
    "LanguageModelConfig",
    "fluctuation",
    "iid_fluctuation",
    "median_of_finite",
    "model_config",
    "training_setup",
]

#: The eps under the running variance when fluctuations are measured in its units.
_VARIANCE_FLOOR = 1e-5

#: Points kept of each fluctuation curve (for the figures).
_CURVE_POINTS = 60


@dataclass(frozen=True)
class LanguageModelConfig(ExperimentConfig):
    """The model and training fields of a language-model experiment (defaults: a small model).

    Attributes
    ----------
    d_model, num_heads, num_layers, dim_feedforward : int
        The transformer (:class:`normlab.nn.TransformerLMConfig`); ``num_heads`` divides
        ``d_model``.
    context_length : int
        Characters per training window (the training length).
    batch_size : int
        Windows per Adam update.
    steps : int
        Adam updates.
    warmup_steps : int
        Updates of linear learning-rate warm-up, then the rate is held constant.
    eval_every : int
        Validation loss every this many updates (and at the first and the last).
    eval_windows : int
        Validation windows of ``context_length`` (the same ones at every evaluation).
    """

    d_model: int = integer(32, minimum=1)
    num_heads: int = integer(4, minimum=1)
    num_layers: int = integer(2, minimum=1)
    dim_feedforward: int = integer(128, minimum=1)
    context_length: int = integer(32, minimum=2, why="a window needs a next character")
    batch_size: int = integer(16, minimum=2, why="BatchNorm trains on batch statistics")
    steps: int = integer(600, minimum=1)
    warmup_steps: int = integer(60, minimum=0)
    eval_every: int = integer(50, minimum=1)
    eval_windows: int = integer(128, minimum=1)

    def validate(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(
                f"num_heads must divide d_model, got d_model={self.d_model} and "
                f"num_heads={self.num_heads}"
            )


def model_config(run: dict, **choices) -> nn.TransformerLMConfig:
    """The transformer of ``run`` (its LanguageModelConfig fields), with ``choices`` on top.

    ``choices`` are the swept :class:`~normlab.nn.TransformerLMConfig` fields (``norm``,
    ``norm_first``, ``positions``, ``mask_norm``, ...); positions default to sinusoidal,
    which run at any length.
    """
    fields = {
        "vocab_size": data.load_char_corpus().vocab_size,
        "context_length": run["context_length"],
        "d_model": run["d_model"],
        "num_heads": run["num_heads"],
        "num_layers": run["num_layers"],
        "dim_feedforward": run["dim_feedforward"],
        "positions": "sinusoidal",
    }
    return nn.TransformerLMConfig(**{**fields, **choices})


def training_setup(run: dict, **choices) -> training.LMTrainingSetup:
    """The training of ``run``: Adam, warm-up then a constant rate, with ``choices`` on top.

    ``choices`` are :class:`~normlab.training.LMTrainingSetup` fields (``lr``, ``min_length``,
    ``bucketed``, ...).
    """
    fields = {
        "steps": run["steps"],
        "batch_size": run["batch_size"],
        "context_length": run["context_length"],
        "warmup_steps": run["warmup_steps"],
        "decay": "constant",
        "eval_every": run["eval_every"],
        "eval_windows": run["eval_windows"],
    }
    return training.LMTrainingSetup(**{**fields, **choices})


def median_of_finite(values) -> float | None:
    """The median of the values that are not None (a diverged run's), or None if none is."""
    finite = [value for value in values if value is not None]
    return float(np.median(finite)) if finite else None


def iid_fluctuation(count: int) -> tuple[float, float]:
    """E|μ_B − μ|/σ and E|s²/σ² − 1| for ``count`` independent Gaussian values (large n)."""
    mean = np.sqrt(2.0 / (np.pi * count))
    var = np.sqrt(2.0 / np.pi) * np.sqrt(2.0 / max(count - 1, 1))
    return float(mean), float(var)


def fluctuation(records: list) -> dict:
    """How far each training batch's BatchNorm statistics are from the running averages.

    For every layer and step, averaged over the features,

    .. math::  \\frac{|\\mu_B - \\mu_{run}|}{\\sigma_{run}}, \\qquad
        \\Big|\\frac{\\sigma^2_B}{\\sigma^2_{run}} - 1\\Big|

    (scale-free, so different models compare; Shen et al. 2020, Fig. 1, plot the unscaled
    distances). ``records``: one list of :class:`~normlab.instruments.BatchStatistics` per
    layer. Returns per layer the medians over the second half of the steps (when the running
    averages have settled), also in units of what independent Gaussian values would give
    (:func:`iid_fluctuation`, at the median count of values per statistic), and the
    per-step curves of the median over layers (thinned for the figures).
    """
    per_layer = {"mean": [], "var": [], "mean_over_iid": [], "var_over_iid": [], "count": []}
    curves = []
    for layer_records in records:
        mean_deviation, var_deviation = [], []
        for record in layer_records:
            running_std = np.sqrt(np.maximum(record.running_var, _VARIANCE_FLOOR))
            mean_deviation.append(
                np.mean(np.abs(record.batch_mean - record.running_mean) / running_std)
            )
            var_deviation.append(np.mean(np.abs(record.batch_var / running_std**2 - 1.0)))
        settled = slice(len(layer_records) // 2, None)
        count = int(np.median([record.count for record in layer_records]))
        iid_mean, iid_var = iid_fluctuation(count)
        per_layer["mean"].append(float(np.median(mean_deviation[settled])))
        per_layer["var"].append(float(np.median(var_deviation[settled])))
        per_layer["mean_over_iid"].append(per_layer["mean"][-1] / iid_mean)
        per_layer["var_over_iid"].append(per_layer["var"][-1] / iid_var)
        per_layer["count"].append(count)
        curves.append((mean_deviation, var_deviation))
    steps = len(curves[0][0])
    kept = np.unique(np.linspace(0, steps - 1, min(steps, _CURVE_POINTS)).astype(int))
    return {
        **per_layer,
        "curve_fraction": ((kept + 1) / steps).tolist(),
        "curve_mean": np.median([np.asarray(c[0])[kept] for c in curves], axis=0).tolist(),
        "curve_var": np.median([np.asarray(c[1])[kept] for c in curves], axis=0).tolist(),
    }


class BatchStatisticsRecorder:
    """Starts :func:`record_batch_statistics` on the model at its first training step.

    The training loop builds the model, so the recording begins in the step callback,
    which runs after the first update's forward: the records start at the second update
    (only the second half of training is summarized).
    """

    def __init__(self) -> None:
        self.records = None
        self._context = None

    def on_step(self, step: int, model, loss: float, inputs=None, targets=None) -> None:
        if self._context is None:
            self._context = record_batch_statistics(model)
            self.records = self._context.__enter__()

    def close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
