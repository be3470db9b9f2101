"""The experiments: one module per question, each config → run → plot.

Every experiment is a module ``normlab.experiments.<name>`` with

* ``NAME``: its name, also the file name of its figure and results;
* ``Config``: a frozen dataclass (subclass of :class:`ExperimentConfig`) whose
  defaults are the full experiment, with ``Config.quick()`` for a small one;
* ``run(config, options=None) -> dict``: plain numbers, JSON-able;
* ``plot(results) -> matplotlib.figure.Figure``;
* optionally ``slides(results) -> list[(name, Figure)]``: one-message 16:9 slides drawn
  from the saved results (``python -m normlab slides``; see :mod:`normlab.plotting`).

Its docstring's first line is its one-line description (``python -m normlab list``); the
rest says what it measures, why, and what result would refute its claim.

One vocabulary in every module: a tuple of method keys (keys of
:data:`normlab.plotting.METHODS`) is called ``METHODS`` (or ``<SOMETHING>_METHODS`` when a
module compares two sets), and the function a sweep maps over its runs is
``measure_one``, or ``measure_<part>`` when an experiment has several parts.

An experiment is registered by adding its name to :data:`REGISTRY`, in the
order the figures are listed::

    >>> from normlab import experiments
    >>> experiment = experiments.get("variance_numerics")
    >>> results = experiment.run(experiment.config(quick=True))   # doctest: +SKIP
    >>> figure = experiment.plot(results)                         # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import importlib
import os

from normlab.experiments.framework import (
    Experiment,
    ExperimentConfig,
    SweepOptions,
    grid,
    load_results,
    save_results,
    sweep,
)

__all__ = [
    "REGISTRY",
    "Experiment",
    "ExperimentConfig",
    "SweepOptions",
    "UnknownExperimentError",
    "get",
    "grid",
    "load_results",
    "names",
    "quick_mode",
    "save_results",
    "sweep",
]

#: The experiments, by module name, in the order of the lessons (the notebooks) that show them:
#: the order of the figures in the README, of ``list``, and of the slide deck.
#: Add a name here when its module ``normlab/experiments/<name>.py`` exists.
REGISTRY: tuple[str, ...] = (
    # lesson 1, what each method normalizes
    "norm_axes",
    "variance_numerics",
    # lesson 2, batch size
    "batch_stat_noise",
    "batch_coupling",
    "accuracy_vs_batch_size",
    "statistics_batch",
    "group_norm_curve",
    # lesson 3, sequence length
    "padding_stats",
    "causal_leak",
    "length_generalization",
    "length_drift",
    # lesson 4, training versus inference
    "train_eval_gap",
    "running_stats",
    "precise_bn",
    "test_time_shift",
    "frozen_batchnorm",
    "batch_renorm",
    # lesson 5, RMSNorm against LayerNorm
    "rms_vs_layernorm",
    # lesson 7, transformers
    "placement_gradients",
    "placement_warmup",
    "lm_norms",
    "lm_batch_composition",
    # lesson 8, training dynamics
    "learning_rate_maps",
    "noisy_batchnorm",
    "loss_landscape",
    "effective_learning_rate",
)


class UnknownExperimentError(ValueError):
    """An experiment name that is not in :data:`REGISTRY` (the message suggests close ones)."""


def names() -> tuple[str, ...]:
    """The registered experiment names, in figure order."""
    return REGISTRY


def get(name: str) -> Experiment:
    """The experiment called ``name``; raises :class:`UnknownExperimentError` if none is."""
    if name not in REGISTRY:
        raise UnknownExperimentError(unknown_name_message(name))
    module = importlib.import_module(f"{__name__}.{name}")
    if getattr(module, "NAME", None) != name:
        raise TypeError(f"{module.__name__} must define NAME = {name!r}")
    return Experiment(name=name, module=module)


def unknown_name_message(name: str) -> str:
    """'unknown experiment ...; did you mean ...?' with the closest registered names."""
    close = _closest_names(name)
    if close:
        hint = "did you mean " + " or ".join(repr(match) for match in close) + "?"
    else:
        hint = "the experiments are: " + ", ".join(REGISTRY)
    return f"unknown experiment {name!r}; {hint}"


def _closest_names(name: str, limit: int = 3, cutoff: float = 0.6) -> list[str]:
    """Registered names similar to ``name`` as a whole or in their first ``len(name)`` letters.

    The prefix comparison catches a misspelt short form ('varience' → 'variance_numerics').
    """

    def similarity(candidate: str) -> float:
        whole = difflib.SequenceMatcher(None, name, candidate).ratio()
        prefix = difflib.SequenceMatcher(None, name, candidate[: len(name)]).ratio()
        return max(whole, prefix)

    scored = sorted(((similarity(candidate), candidate) for candidate in REGISTRY), reverse=True)
    return [candidate for score, candidate in scored[:limit] if score >= cutoff]


def quick_mode() -> bool:
    """True when the environment variable ``NORMLAB_QUICK`` is ``1`` (the notebooks' tests).

    Notebooks call ``experiment.config(quick=quick_mode(), ...)`` so that the test
    suite runs them with the small configs while a learner gets the full ones.
    """
    return os.environ.get("NORMLAB_QUICK", "") == "1"
