"""Test-time distribution shift: BatchNorm's training statistics, AdaBN, LayerNorm and GroupNorm.

The question: the test images change (lower or higher contrast, a brighter picture,
noise) but the network does not. BatchNorm in eval mode normalizes with statistics of
the *training* images, so a shift of the test images passes through it unchanged. Two
ways out: recompute BatchNorm's statistics on the shifted test images (AdaBN, Li et al.
2016, "Revisiting Batch Normalization For Practical Domain Adaptation": no labels, no
weight update), or normalize each sample by its own statistics (LayerNorm, GroupNorm),
which may or may not remove the shift, depending on where the norm sits. How much
accuracy does each keep, against the strength of the shift?

Setup. The digits MLP (64 → 64 × 2 → 10) and the digits CNN (:class:`normlab.nn.CNN`,
widths 16 and 32) with each normalization, trained on the clean training images (SGD,
momentum 0.9, constant learning rate, batch size B, equal epochs), the learning rate of
each (model, norm) chosen from ``learning_rates`` by its median accuracy on validation
images carved from the training images (:func:`normlab.training.best_learning_rate`),
never on the test images. Then each trained network is tested on the 450 test images
under three shifts of growing strength (:func:`normlab.data.shift_digits`, in units of
each pixel's training standard deviation): contrast ``x · a``, brightness ``x + b`` and
Gaussian noise ``x + σ·ε`` (the same ε for every σ of a seed). BatchNorm networks are
tested twice: with their running statistics, and after AdaBN (the statistics of all 450
shifted test images, :func:`normlab.training.recompute_batchnorm_statistics`; transductive:
the whole shifted test set is seen at once, without its labels).

Theory. In the MLP the first layer is ``x W`` with no bias (BatchNorm cancels it), so a
contrast or brightness shift, an affine map of every pixel, reaches the first BatchNorm
as an affine map of every feature, which statistics recomputed on the shifted images
undo exactly: AdaBN should then give the same accuracy at every strength (up to float
rounding). A contrast factor is a pure scale, which the CNN's zero padding scales too, so
there as well; a brightness offset is not added to the padded zeros, so in the CNN AdaBN
is close but not exact at the image border. Noise adds variance that no per-feature
affine map removes. BatchNorm with its training statistics applies a fixed affine map:
``(a·z − μ)/σ`` is not ``(z − μ)/σ``, so the shift reaches the next layer. A ReLU
network without biases is positively homogeneous (scaling the input scales the logits
and keeps every prediction), so an unnormalized network, and one whose norms divide by
each sample's own spread, should be hurt by a contrast change only through its biases;
a brightness offset adds a vector that a mean over features removes only in part.

Each point is the median over seeds, the band the min–max range.

What would refute the claims: AdaBN in the MLP changing by more than one test image
across contrast and brightness strengths (then the recomputed statistics do not undo an
affine shift), BatchNorm with training statistics keeping its clean accuracy under a
strong contrast change (then the shift does not pass through it), or AdaBN making any
network worse under noise than the training statistics by more than the spread over
seeds. The README gives the numbers of the default run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from normlab import data, plotting, training
from normlab.experiments.framework import (
    ExperimentConfig,
    Measured,
    SweepOptions,
    choices,
    integer,
    numbers,
    seeds,
    sweep,
)
from normlab.layers import NORM_KINDS

NAME = "test_time_shift"

#: The models, and the normalizations trained in each by default.
MODELS = ("mlp", "cnn")
METHODS = ("none", "batch", "layer", "group")

#: The result key of BatchNorm networks tested after AdaBN (not a trained method).
ADABN = "batch_adabn"

#: The shifts, in the order of the figure's columns; the strength of each that is no shift.
SHIFTS = data.SHIFT_KINDS
NO_SHIFT = {"contrast": 1.0, "brightness": 0.0, "noise": 0.0}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to train and test. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    models : tuple of ``"mlp"``, ``"cnn"``
    norms : tuple of str
        The normalizations trained (kinds of :func:`normlab.make_norm`); ``"batch"`` is
        tested with its training statistics and after AdaBN.
    contrast_factors, brightness_offsets, noise_stds : tuple of float
        The strengths of each shift (see :func:`normlab.data.shift_digits`).
    learning_rates : tuple of float
        Candidates; each (model, norm) trains with the one best on the validation images.
    batch_size : int ≥ 2
    epochs : int
        Passes over the training images.
    seeds : tuple of int
        One network per (model, norm, seed); the noise of a seed is the same for all.
    """

    models: tuple[str, ...] = choices(MODELS, MODELS)
    norms: tuple[str, ...] = choices(METHODS, NORM_KINDS)
    contrast_factors: tuple[float, ...] = numbers((0.25, 0.5, 1.0, 2.0, 4.0), above=0)
    brightness_offsets: tuple[float, ...] = numbers((0.0, 0.5, 1.0, 1.5, 2.0))
    noise_stds: tuple[float, ...] = numbers((0.0, 0.25, 0.5, 1.0, 1.5), minimum=0)
    learning_rates: tuple[float, ...] = numbers((0.01, 0.03, 0.1), above=0)
    batch_size: int = integer(32, minimum=2, maximum=1077)
    epochs: int = integer(10, minimum=1)
    seeds: tuple[int, ...] = seeds(3)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            models=("mlp",),
            norms=("batch", "layer"),
            contrast_factors=(0.25, 1.0),
            brightness_offsets=(0.0, 2.0),
            noise_stds=(0.0, 1.5),
            learning_rates=(0.03, 0.1),
            epochs=3,
            seeds=(0, 1),
        )

    def validate(self) -> None:
        if "instance" in self.norms and "mlp" in self.models:
            raise ValueError(
                "norms: InstanceNorm normalizes over positions, which the MLP's vectors do not "
                "have; use it with models=('cnn',)"
            )

    def strengths(self, kind: str) -> tuple[float, ...]:
        return {
            "contrast": self.contrast_factors,
            "brightness": self.brightness_offsets,
            "noise": self.noise_stds,
        }[kind]


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def _train(run: dict, learning_rate: float, evaluation: str):
    train = training.train_cnn if run["model"] == "cnn" else training.train_mlp
    return train(
        norm=run["norm"],
        batch_size=run["batch_size"],
        seed=run["seed"],
        epochs=run["epochs"],
        base_lr=learning_rate,
        lr_rule="constant",
        evaluation=evaluation,
        return_model=True,
    )


def measure_validation(run: dict) -> dict:
    """Validation accuracy of one (model, norm, learning rate, seed): for choosing the rate."""
    numbers, _ = _train(run, run["learning_rate"], "validation")
    return {"validation_accuracy": numbers["test_accuracy_eval"], "diverged": numbers["diverged"]}


def measure_one(run: dict) -> dict:
    """Train one network at its chosen learning rate; test it under every shift.

    The noise of a seed is drawn from a generator seeded with ``(seed, 2)``, the same ε
    for every strength, model and norm.
    """
    numbers, model = _train(run, run["learning_rate"], "test")
    split = training.digits()
    x_test = split.x_test_images if run["model"] == "cnn" else split.x_test

    def accuracy(network, x) -> float:
        return float(np.mean(training.predict(network, x) == split.y_test))

    shifted_accuracy, adabn_accuracy = {}, {}
    for kind, strengths in (
        ("contrast", run["contrast_factors"]),
        ("brightness", run["brightness_offsets"]),
        ("noise", run["noise_stds"]),
    ):
        shifted_accuracy[kind], adabn_accuracy[kind] = [], []
        for strength in strengths:
            noise_rng = np.random.default_rng([run["seed"], 2])
            shifted = data.shift_digits(x_test, kind, strength, rng=noise_rng)
            shifted_accuracy[kind].append(accuracy(model, shifted))
            if run["norm"] == "batch":
                adapted = copy.deepcopy(model)
                training.recompute_batchnorm_statistics(adapted, shifted)
                adabn_accuracy[kind].append(accuracy(adapted, shifted))
    return {
        "clean_accuracy": numbers["test_accuracy_eval"],
        "accuracy": shifted_accuracy,
        "adabn_accuracy": adabn_accuracy if run["norm"] == "batch" else None,
        "diverged": numbers["diverged"],
    }


def chosen_learning_rates(config: Config, options: SweepOptions | None) -> dict:
    """``{model: {norm: learning rate}}``, each best on the validation images."""
    validation = config.runs(
        model="models", norm="norms", learning_rate="learning_rates", seed="seeds"
    ).measure(NAME, measure_validation, options)
    accuracy = validation.table("validation_accuracy")  # (models, norms, rates, seeds)
    return {
        model: {
            norm: training.best_learning_rate(config.learning_rates, accuracy[i, j])
            for j, norm in enumerate(config.norms)
        }
        for i, model in enumerate(config.models)
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Choose the learning rates, train every (model, norm, seed), test under every shift.

    Returns
    -------
    dict with
        ``config``; ``models``; ``methods`` (the norms, and :data:`ADABN` after
        ``"batch"``); ``strengths[kind]``;
        ``accuracy[model][method][kind]``: list over strengths of lists over seeds
        (fractions); ``clean_accuracy[model][method]``: list over seeds;
        ``learning_rates[model][norm]``: the chosen ones; ``diverged_runs``;
        ``headline``.
    """
    rates = chosen_learning_rates(config, options)
    runs = config.runs(model="models", norm="norms", seed="seeds")
    with_rates = [dict(one, learning_rate=rates[one["model"]][one["norm"]]) for one in runs]
    measured = Measured(runs, sweep(NAME, measure_one, with_rates, options))

    methods = []
    for norm in config.norms:
        methods += [norm, ADABN] if norm == "batch" else [norm]
    accuracy, clean = {}, {}
    for model in config.models:
        accuracy[model], clean[model] = {}, {}
        for method in methods:
            norm, key = ("batch", "adabn_accuracy") if method == ADABN else (method, "accuracy")
            table = measured.table(key, model=model, norm=norm)  # (seeds,) of dicts
            accuracy[model][method] = {
                kind: np.asarray([one[kind] for one in table]).T.tolist() for kind in SHIFTS
            }
            clean[model][method] = measured.table("clean_accuracy", model=model, norm=norm).tolist()
    return {
        "config": config.to_dict(),
        "models": list(config.models),
        "methods": methods,
        "strengths": {kind: list(config.strengths(kind)) for kind in SHIFTS},
        "accuracy": accuracy,
        "clean_accuracy": clean,
        "learning_rates": rates,
        "diverged_runs": int(measured.table("diverged").sum()),
        "headline": _headline(config, methods, accuracy, rates),
    }


def strongest(config: Config, kind: str) -> float:
    """The strength of ``kind`` farthest from no shift (contrast in log; ties: the first)."""

    def distance(strength: float) -> float:
        return abs(np.log(strength)) if kind == "contrast" else abs(strength - NO_SHIFT[kind])

    return max(config.strengths(kind), key=distance)


def _headline(config: Config, methods: list[str], accuracy: dict, rates: dict) -> dict:
    median = {
        model: {
            method: {
                kind: {
                    f"{strength:g}": float(100 * np.median(values))
                    for strength, values in zip(
                        config.strengths(kind), accuracy[model][method][kind], strict=True
                    )
                }
                for kind in SHIFTS
            }
            for method in methods
        }
        for model in config.models
    }
    headline = {
        "median_accuracy_percent": median,
        "strongest": {kind: f"{strongest(config, kind):g}" for kind in SHIFTS},
        "learning_rates": rates,
    }
    if "batch" in config.norms:
        spread = {}
        for model in config.models:
            values = [
                np.median(per_strength)
                for kind in ("contrast", "brightness")
                for per_strength in accuracy[model][ADABN][kind]
            ]
            spread[model] = float(100 * (max(values) - min(values)))
        headline["adabn_affine_shift_accuracy_range_points"] = spread
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

_AXIS_LABELS = {
    "contrast": "contrast factor a (x → a·x)",
    "brightness": "brightness offset b (x → x + b)",
    "noise": "noise std σ (x → x + σ·ε)",
}


def _looks(method: str) -> dict:
    """A method's style; AdaBN is BatchNorm's colour, dashed, with open markers."""
    if method == ADABN:
        looks = plotting.method_style("batch")
        return {
            **looks,
            "label": "BatchNorm, statistics of the shifted test images (AdaBN)",
            "linestyle": "--",
            "markerfacecolor": "white",
        }
    looks = plotting.method_style(method)
    if method == "batch":
        looks["label"] = "BatchNorm, training statistics"
    return looks


@plotting.styled
def plot(results: dict) -> Figure:
    """Rows: models; columns: contrast, brightness, noise; accuracy against the strength."""
    config = results["config"]
    models = results["models"]
    figure, axes = plotting.subplots(
        len(models), len(SHIFTS), width=19.0, height=5.6 * len(models) + 1.2, sharey=True
    )
    axes = np.asarray(axes).reshape(len(models), len(SHIFTS))
    for row, model in enumerate(models):
        for column, kind in enumerate(SHIFTS):
            ax = axes[row, column]
            strengths = np.asarray(results["strengths"][kind])
            for method in results["methods"]:
                values = 100 * np.asarray(results["accuracy"][model][method][kind])
                plotting.plot_spread(ax, strengths, values, **_looks(method))
            ax.axvline(NO_SHIFT[kind], color=plotting.REFERENCE_COLOR, linestyle=":", linewidth=1.4)
            if kind == "contrast":
                plotting.log2_axis(ax, strengths, label=_AXIS_LABELS[kind])
            else:
                ax.set_xticks(strengths)
                ax.set_xlabel(_AXIS_LABELS[kind])
            ax.set_title(f"{model.upper()}: {kind}")
        axes[row, 0].set_ylabel("test accuracy (%)")
    axes[0, 0].legend(loc="lower center", fontsize=11)
    spread = plotting.spread_caption(len(config["seeds"]), form="center_of")
    described = {"mlp": "MLP 64→64×2→10", "cnn": "CNN (widths 16, 32)"}
    plotting.set_title(
        figure,
        "Test images shifted, network unchanged: which normalization keeps its accuracy?",
        f"Digits {' and '.join(described[model] for model in models)}, trained on clean images "
        f"({config['epochs']} epochs, B = {config['batch_size']}, SGD with momentum 0.9, the "
        "learning rate of each model and norm chosen on validation images); shifts in units "
        "of each pixel's training std, dotted: no shift. AdaBN: BatchNorm statistics "
        f"recomputed on all 450 shifted test images, no labels. {spread[0].upper()}{spread[1:]}.",
    )
    return figure


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summary(results: dict) -> str:
    """Accuracy without a shift and at the strongest shift of each kind, and what it says."""
    headline = results["headline"]
    median = headline["median_accuracy_percent"]
    strongest_of = headline["strongest"]
    header = "".join(f"{kind + ' ' + strongest_of[kind]:>16s}" for kind in SHIFTS)
    lines = []
    for model in results["models"]:
        lines.append(f"{model.upper()}, test accuracy (%), median over seeds:")
        lines.append(f"  {'':56s}{'no shift':>9s}{header}")
        for method in results["methods"]:
            row = median[model][method]
            unshifted = [
                row[kind][f"{NO_SHIFT[kind]:g}"]
                for kind in SHIFTS
                if f"{NO_SHIFT[kind]:g}" in row[kind]
            ]
            clean = f"{unshifted[0]:9.1f}" if unshifted else f"{'—':>9s}"
            values = "".join(f"{row[kind][strongest_of[kind]]:16.1f}" for kind in SHIFTS)
            lines.append(f"  {_looks(method)['label']:56s}{clean}{values}")
    for model, spread in headline.get("adabn_affine_shift_accuracy_range_points", {}).items():
        lines.append(
            f"{model.upper()}, AdaBN: accuracy across every contrast and brightness tested "
            f"varies by {spread:.1f} points"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

#: The shifts of the slide: those an affine map of each feature undoes.
_AFFINE_SHIFTS = ("contrast", "brightness")

#: AdaBN "undoes" a shift when its median accuracy varies by less than this (points).
_UNDONE_POINTS = 1.0

_SLIDE_AXIS_LABELS = {
    "contrast": "contrast factor",
    "brightness": "brightness offset",
}

_SLIDE_LABELS = {
    "batch": "BatchNorm, training statistics",
    ADABN: "BatchNorm, test statistics",
}


def _median_percent(results: dict, model: str, method: str, kind: str) -> np.ndarray:
    return 100 * np.median(results["accuracy"][model][method][kind], axis=1)  # (strengths,)


def _shift_title(results: dict, model: str) -> str:
    low = min(
        float(np.min(_median_percent(results, model, "batch", kind))) for kind in _AFFINE_SHIFTS
    )
    if ADABN not in results["methods"]:
        return f"Shifted test images: BatchNorm with training statistics falls to {low:.0f} %"
    adapted = np.concatenate(
        [_median_percent(results, model, ADABN, kind) for kind in _AFFINE_SHIFTS]
    )
    spread = float(np.max(adapted) - np.min(adapted))
    name = model.upper()
    if spread < _UNDONE_POINTS:
        kept = f"undo contrast and brightness shifts in the {name}"
    else:
        kept = f"keep the {name} within {spread:.0f} points"
    return (
        f"Statistics recomputed on the shifted test images {kept}; with the training "
        f"statistics it falls to {low:.0f} %"
    )


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: accuracy against contrast and brightness, the MLP, each normalization."""
    config = results["config"]
    model = "mlp" if "mlp" in results["models"] else results["models"][0]
    figure, axes = plotting.slide_figure(
        _shift_title(results, model),
        f"digits {model.upper()} trained on clean images; "
        + plotting.spread_caption(len(config["seeds"]), form="center_of"),
        ncols=len(_AFFINE_SHIFTS),
        sharey=True,
    )
    for ax, kind in zip(axes, _AFFINE_SHIFTS, strict=True):
        strengths = np.asarray(results["strengths"][kind])
        for method in results["methods"]:
            looks = _looks(method)
            looks["label"] = _SLIDE_LABELS.get(method, looks["label"])
            values = 100 * np.asarray(results["accuracy"][model][method][kind])
            plotting.plot_spread(ax, strengths, values, **looks)
        ax.axvline(NO_SHIFT[kind], color=plotting.REFERENCE_COLOR, linestyle=":", linewidth=2.5)
        if kind == "contrast":
            plotting.log2_axis(ax, strengths, label=_SLIDE_AXIS_LABELS[kind])
        else:
            ax.set_xticks(strengths, [f"{value:g}" for value in strengths])
            ax.set_xlabel(_SLIDE_AXIS_LABELS[kind])
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(
        loc="lower right", frameon=True, edgecolor="none"
    )  # right of the contrast panel's dip, below its lines
    return [("shift", figure)]
