"""Batch Renormalization at small batch sizes: BatchNorm vs Batch Renorm vs GroupNorm, and gaps.

The question: Batch Renorm (Ioffe 2017, "Batch Renormalization: Towards Reducing
Minibatch Dependence in Batch-Normalized Models") corrects each training batch's
normalization by ``r = σ_B/σ`` and ``d = (μ_B − μ)/σ`` towards the running statistics,
clipped to ``[1/r_max, r_max]`` and ``[−d_max, d_max]`` and held constant in the backward
pass (:class:`normlab.BatchRenorm`). Unclipped, a training forward computes exactly the
eval-mode function, so the network is trained for the function it is tested with. Does
that recover the accuracy BatchNorm loses at small batches, against GroupNorm, which
has no batch dependence at all? And how large is each one's train/eval gap?

Setup. The digits MLP (64 → 64 × 2 → 10, ``Linear → norm → ReLU``) with BatchNorm,
Batch Renorm or GroupNorm, trained with SGD (momentum 0.9) for the same number of epochs
at every batch size B (equal samples seen) under the linear learning-rate rule
``lr = base · B / 32``. The base of each method is chosen from ``base_learning_rates``
by its median accuracy on validation images carved from the training images at B = 32
(:func:`normlab.training.best_learning_rate`), never on the test images, then scaled by
the rule to every B. Batch Renorm's limits follow Ioffe's schedule
(:class:`normlab.training.RenormSchedule`): exactly BatchNorm for the first 5 % of the
steps, then relaxed linearly to ``r_max = 3`` at 40 % and ``d_max = 5`` at 25 % (the
paper's 5k, 40k and 25k steps, read as fractions of the run). Without the relaxation
Batch Renorm *is* BatchNorm (``r_max = 1``, ``d_max = 0``), which the tests check.

Measured for each network: test accuracy in eval mode (running statistics); in train
mode (the test set cut at random into batches of B, each normalized by its own
statistics; for Batch Renorm with its r and d at the final limits); their difference,
the train/eval gap; and, for Batch Renorm, the share of (step, layer, feature) in the last
epoch at which r or d was clipped (where the correction did not reach the running
statistics). Each point is the median over seeds, the band the min–max range; the
headline compares Batch Renorm with BatchNorm and GroupNorm at the smallest batch size,
paired (same seeds and test images; :func:`normlab.stats.paired_comparison`).

Theory. At B = 2 BatchNorm maps every feature of (N, D) vectors to ±1, so the network is
trained on a function that eval mode never computes: the gap is large and the running
statistics poor. Batch Renorm trains with ``(x − μ_B)/σ_B · r + d``, which equals the
eval-mode ``(x − μ)/σ`` wherever r and d are not clipped, so its gap should be small; but
at B = 2, σ_B (half the distance of two values) is often far from σ, r is clipped, and
the correction is only partial.

What would refute the claim that Batch Renorm repairs BatchNorm at small batches: Batch
Renorm no better than BatchNorm at the smallest batch size (the paired interval includes
0 or lies below it), or a train/eval gap as large as BatchNorm's there. The README gives
the numbers of the default run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

import normlab as nl
from normlab import plotting, stats, training
from normlab.experiments.framework import (
    ExperimentConfig,
    Measured,
    SweepOptions,
    choices,
    integer,
    integers,
    numbers,
    seeds,
    setup,
    sweep,
)
from normlab.training import RenormSchedule

NAME = "batch_renorm"

#: The methods compared, in legend order.
METHODS = ("batch", "batch_renorm", "group")

#: The batch size the base learning rates are chosen at (and the linear rule's reference).
REFERENCE_BATCH_SIZE = 32

#: The equivalence margin of the paired comparisons (a fraction: one point).
MARGIN = 0.01

#: r or d counts as clipped when it is this close (relatively) to its limit.
_CLIP_TOLERANCE = 1e-6


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to train. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    norms : tuple of ``"batch"``, ``"batch_renorm"``, ``"group"``
    batch_sizes : tuple of int ≥ 2
    base_learning_rates : tuple of float
        Candidates at B = 32; each method trains with the best on the validation images,
        scaled by B / 32.
    epochs : int
        Passes over the training images at every batch size.
    renorm_schedule : RenormSchedule
        Batch Renorm's limits over training (the shape of Ioffe's schedule).
    seeds : tuple of int
        One network per (method, batch size, seed).
    """

    norms: tuple[str, ...] = choices(METHODS, METHODS)
    batch_sizes: tuple[int, ...] = integers((2, 4, 8, 32), minimum=2, maximum=1077)
    base_learning_rates: tuple[float, ...] = numbers((0.05, 0.1, 0.2, 0.4), above=0)
    epochs: int = integer(5, minimum=1)
    renorm_schedule: RenormSchedule = setup(RenormSchedule)
    seeds: tuple[int, ...] = seeds(3)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            norms=("batch", "batch_renorm"),
            batch_sizes=(2, 32),
            base_learning_rates=(0.1, 0.2),
            epochs=1,
            seeds=(0, 1),
        )

    def concerns(self) -> list[str]:
        return training.TrainingSetup(epochs=self.epochs).few_steps(self.batch_sizes)


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def _train(run: dict, batch_size: int, evaluation: str, on_step=None) -> dict:
    renorm = run["norm"] == "batch_renorm"
    return training.train_mlp(
        norm=run["norm"],
        batch_size=batch_size,
        seed=run["seed"],
        epochs=run["epochs"],
        base_lr=run["base_lr"],
        lr_rule="linear",
        reference_batch_size=REFERENCE_BATCH_SIZE,
        evaluation=evaluation,
        renorm_schedule=RenormSchedule(**run["renorm_schedule"]) if renorm else None,
        on_step=on_step,
    )


def measure_validation(run: dict) -> dict:
    """Validation accuracy of one (method, base learning rate, seed) at B = 32."""
    numbers = _train(run, REFERENCE_BATCH_SIZE, "validation")
    return {"validation_accuracy": numbers["test_accuracy_eval"], "diverged": numbers["diverged"]}


class _ClipCounter:
    """Counts, over the last epoch's steps, the features whose r or d hit its limit."""

    def __init__(self, first_counted_step: int) -> None:
        self.first = first_counted_step
        self.clipped_r = self.clipped_d = self.total = 0

    def __call__(self, step, model, loss, x, y) -> None:
        if step < self.first:
            return
        for layer in model.modules():
            if isinstance(layer, nl.BatchRenorm) and layer.correction is not None:
                r, d = layer.correction
                at_r = np.isclose(r, layer.r_max, rtol=_CLIP_TOLERANCE) | np.isclose(
                    r, 1 / layer.r_max, rtol=_CLIP_TOLERANCE
                )
                at_d = np.isclose(np.abs(d), layer.d_max, rtol=_CLIP_TOLERANCE, atol=0)
                self.clipped_r += int(at_r.sum())
                self.clipped_d += int(at_d.sum())
                self.total += r.size


def measure_one(run: dict) -> dict:
    """Train one network at its method's base learning rate; eval and train-mode accuracy."""
    steps_per_epoch = len(training.digits().x_train) // run["batch_size"]
    counter = _ClipCounter((run["epochs"] - 1) * steps_per_epoch + 1)
    numbers = _train(run, run["batch_size"], "test", on_step=counter)
    clipped = None
    if counter.total:
        clipped = {"r": counter.clipped_r / counter.total, "d": counter.clipped_d / counter.total}
    return {
        "eval_accuracy": numbers["test_accuracy_eval"],
        "train_mode_accuracy": numbers["test_accuracy_train_mode"],
        "test_correct": numbers["test_correct"],
        "learning_rate": numbers["learning_rate"],
        "clipped_share_last_epoch": clipped,
        "diverged": numbers["diverged"],
    }


def chosen_base_learning_rates(config: Config, options: SweepOptions | None) -> dict:
    """``{method: base learning rate}``, each best on the validation images at B = 32."""
    validation = config.runs(norm="norms", base_lr="base_learning_rates", seed="seeds").measure(
        NAME, measure_validation, options
    )
    accuracy = validation.table("validation_accuracy")  # (methods, rates, seeds)
    return {
        norm: training.best_learning_rate(config.base_learning_rates, accuracy[index])
        for index, norm in enumerate(config.norms)
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Choose the base learning rates, then train every (method, batch size, seed).

    Returns
    -------
    dict with
        ``config``; ``norms``; ``batch_sizes``;
        ``eval_accuracy[norm]``, ``train_mode_accuracy[norm]``: lists over batch sizes of
        lists over seeds (fractions);
        ``clipped_share[kind]`` for ``"r"`` and ``"d"``: Batch Renorm's, lists over batch
        sizes of lists over seeds (None without Batch Renorm);
        ``base_learning_rates[norm]``: the chosen ones; ``diverged_runs``; ``headline``.
    """
    rates = chosen_base_learning_rates(config, options)
    runs = config.runs(norm="norms", batch_size="batch_sizes", seed="seeds")
    with_rates = [dict(one, base_lr=rates[one["norm"]]) for one in runs]
    measured = Measured(runs, sweep(NAME, measure_one, with_rates, options))

    def table(key: str, norm: str) -> np.ndarray:  # (batch sizes, seeds, ...)
        return measured.table(key, norm=norm)

    eval_accuracy = {norm: table("eval_accuracy", norm) for norm in config.norms}
    train_mode = {norm: table("train_mode_accuracy", norm) for norm in config.norms}
    clipped = None
    if "batch_renorm" in config.norms:
        shares = table("clipped_share_last_epoch", "batch_renorm")  # (batch sizes, seeds)
        clipped = {kind: [[share[kind] for share in row] for row in shares] for kind in ("r", "d")}
    return {
        "config": config.to_dict(),
        "norms": list(config.norms),
        "batch_sizes": list(config.batch_sizes),
        "eval_accuracy": {norm: values.tolist() for norm, values in eval_accuracy.items()},
        "train_mode_accuracy": {norm: values.tolist() for norm, values in train_mode.items()},
        "clipped_share": clipped,
        "base_learning_rates": rates,
        "diverged_runs": int(measured.table("diverged").sum()),
        "headline": _headline(config, measured, eval_accuracy, train_mode, clipped),
    }


def _headline(config, measured, eval_accuracy, train_mode, clipped) -> dict:
    sizes = [str(size) for size in config.batch_sizes]
    smallest = config.batch_sizes[0]

    def by_size(values) -> dict:
        return dict(zip(sizes, (float(value) for value in values), strict=True))

    headline = {
        "smallest_batch_size": smallest,
        "median_eval_accuracy_percent": {
            norm: by_size(100 * np.median(values, axis=1)) for norm, values in eval_accuracy.items()
        },
        "median_train_eval_gap_points": {
            norm: by_size(100 * np.median(eval_accuracy[norm] - train_mode[norm], axis=1))
            for norm in config.norms
        },
    }
    if "batch_renorm" in config.norms:
        renorm = measured.table("test_correct", norm="batch_renorm", batch_size=smallest)
        for other in ("batch", "group"):
            if other not in config.norms:
                continue
            correct = measured.table("test_correct", norm=other, batch_size=smallest)
            comparison = stats.paired_comparison(renorm, correct, margin=MARGIN)
            headline[f"renorm_minus_{other}_points_at_smallest"] = 100 * comparison.mean_difference
            headline[f"renorm_minus_{other}_interval_at_smallest"] = [
                100 * end for end in comparison.interval
            ]
            headline[f"renorm_versus_{other}_verdict_at_smallest"] = comparison.verdict
        headline["median_clipped_share_percent"] = {
            kind: by_size(100 * np.median(values, axis=1)) for kind, values in clipped.items()
        }
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """Accuracy, train/eval gap and Batch Renorm's clipping, each against the batch size."""
    config = results["config"]
    sizes = np.asarray(results["batch_sizes"])
    figure, (ax_accuracy, ax_gap, ax_clip) = plotting.subplots(1, 3, width=21.0, height=6.6)
    for norm in results["norms"]:
        looks = plotting.method_style(norm)
        eval_accuracy = 100 * np.asarray(results["eval_accuracy"][norm])
        plotting.plot_spread(ax_accuracy, sizes, eval_accuracy, **looks)
        gap = eval_accuracy - 100 * np.asarray(results["train_mode_accuracy"][norm])
        plotting.plot_spread(ax_gap, sizes, gap, **looks)
    ax_accuracy.set_ylabel("test accuracy, eval mode (%)")
    ax_accuracy.set_title("accuracy")
    ax_accuracy.legend(loc="lower right")
    ax_gap.axhline(0, color=plotting.REFERENCE_COLOR, linewidth=1.4)
    ax_gap.set_ylabel("eval − train-mode accuracy (points)")
    ax_gap.set_title("train/eval gap (test batches of B)")
    for ax in (ax_accuracy, ax_gap):
        plotting.log2_axis(ax, sizes, label="batch size B (training)")

    if results["clipped_share"] is None:
        ax_clip.set_axis_off()
    else:
        color = plotting.method_style("batch_renorm")["color"]
        for kind, marker, linestyle in (("r", "p", "-"), ("d", "D", "--")):
            plotting.plot_spread(
                ax_clip,
                sizes,
                100 * np.asarray(results["clipped_share"][kind]),
                color=color,
                marker=marker,
                linestyle=linestyle,
                label=f"{kind} at its limit",
            )
        plotting.log2_axis(ax_clip, sizes, label="batch size B (training)")
        ax_clip.set_ylabel("share of features, last epoch (%)")
        ax_clip.set_title("Batch Renorm: how often r, d are clipped")
        ax_clip.legend(loc="upper right")

    schedule = RenormSchedule(**config["renorm_schedule"])
    rates = ", ".join(
        f"{plotting.method_label(norm)} {rate:g}"
        for norm, rate in results["base_learning_rates"].items()
    )
    spread = plotting.spread_caption(len(config["seeds"]), form="center_of")
    plotting.set_title(
        figure,
        "Batch Renorm at small batches: closer to its eval-mode function than BatchNorm?",
        f"Digits MLP 64→64×2→10, SGD (momentum 0.9), {config['epochs']} epochs at every B, "
        f"lr = base·B/32 with the base chosen on validation images at B = 32 ({rates}). "
        f"Batch Renorm: {schedule.describe()}. {spread[0].upper()}{spread[1:]}.",
    )
    return figure


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summary(results: dict) -> str:
    """Accuracy and train/eval gap of each method at each B, Batch Renorm's paired verdicts."""
    headline = results["headline"]
    sizes = [str(size) for size in results["batch_sizes"]]
    header = "".join(f"{'B = ' + size:>9s}" for size in sizes)
    lines = ["test accuracy, eval mode (%), median over seeds", f"  {'':45s}{header}"]
    for norm in results["norms"]:
        values = headline["median_eval_accuracy_percent"][norm]
        lines.append(
            f"  {plotting.method_label(norm):45s}" + "".join(f"{values[s]:9.1f}" for s in sizes)
        )
    lines += ["train/eval gap: eval − train-mode accuracy (points)", f"  {'':45s}{header}"]
    for norm in results["norms"]:
        values = headline["median_train_eval_gap_points"][norm]
        lines.append(
            f"  {plotting.method_label(norm):45s}" + "".join(f"{values[s]:9.1f}" for s in sizes)
        )
    if "median_clipped_share_percent" in headline:
        for kind, values in headline["median_clipped_share_percent"].items():
            label = f"Batch Renorm, {kind} clipped (% of features)"
            lines.append(f"  {label:45s}" + "".join(f"{values[s]:9.1f}" for s in sizes))
    smallest = headline["smallest_batch_size"]
    for other in ("batch", "group"):
        if f"renorm_minus_{other}_points_at_smallest" not in headline:
            continue
        low, high = headline[f"renorm_minus_{other}_interval_at_smallest"]
        phrase = stats.verdict_phrase(
            headline[f"renorm_versus_{other}_verdict_at_smallest"], plotting.method_label(other)
        )
        lines.append(
            f"at B = {smallest}, Batch Renorm − {plotting.method_label(other)}: "
            f"{headline[f'renorm_minus_{other}_points_at_smallest']:+.1f} points "
            f"(95 % interval {low:+.1f} to {high:+.1f}): Batch Renorm is {phrase}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------


def _against(verdict: str, points: float, other: str) -> str:
    """Batch Renorm against ``other`` in words: the paired verdict, the median difference."""
    if verdict == "better":
        return f"{abs(points):.0f} points ahead of {other}"
    if verdict == "worse":
        return f"{abs(points):.0f} points behind {other}"
    if verdict == "as good as":
        return f"as good as {other}"
    return f"not told apart from {other}"


def _accuracy_slide(results: dict) -> Figure:
    config = results["config"]
    batch_sizes = results["batch_sizes"]
    headline = results["headline"]
    median = {
        norm: 100 * np.median(results["eval_accuracy"][norm], axis=1) for norm in results["norms"]
    }
    phrases = [
        _against(
            headline[f"renorm_versus_{other}_verdict_at_smallest"],
            median["batch_renorm"][0] - median[other][0],
            plotting.method_label(other),
        )
        for other in ("batch", "group")
        if f"renorm_versus_{other}_verdict_at_smallest" in headline
    ]
    if phrases:
        title = f"At batch size {batch_sizes[0]}, Batch Renorm is {plotting.word_list(phrases)}"
    else:
        title = "Test accuracy against batch size"
    figure, ax = plotting.slide_figure(
        title,
        "digits MLP, tested with the running averages; "
        + plotting.spread_caption(len(config["seeds"]), form="center_of"),
    )
    for norm in results["norms"]:
        plotting.plot_spread(
            ax,
            batch_sizes,
            100 * np.asarray(results["eval_accuracy"][norm]),
            **plotting.method_style(norm),
        )
    plotting.log2_axis(ax, batch_sizes, label="batch size")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right")
    return figure


def _gap_slide(results: dict) -> Figure:
    config = results["config"]
    batch_sizes = results["batch_sizes"]
    gaps = {
        norm: 100
        * (np.asarray(results["eval_accuracy"][norm]) - results["train_mode_accuracy"][norm])
        for norm in results["norms"]
    }  # (batch sizes, seeds) each
    at_smallest = {norm: float(np.median(gap[0])) for norm, gap in gaps.items()}
    if at_smallest["batch_renorm"] < at_smallest["batch"]:
        title = (
            f"Batch Renorm is trained as it is tested: at batch size {batch_sizes[0]} its "
            f"train/test gap is {at_smallest['batch_renorm']:.0f} points, "
            f"BatchNorm's {at_smallest['batch']:.0f}"
        )
    else:
        title = "How far test accuracy with batch statistics falls below the running averages'"
    figure, ax = plotting.slide_figure(
        title,
        "test batches of the training size; "
        + plotting.spread_caption(len(config["seeds"]), form="center_of"),
    )
    for norm, gap in gaps.items():
        plotting.plot_spread(ax, batch_sizes, gap, **plotting.method_style(norm))
    ax.axhline(0.0, color=plotting.REFERENCE_COLOR, linewidth=2)
    plotting.log2_axis(ax, batch_sizes, label="batch size")
    ax.set_ylabel("running averages minus\nbatch statistics (points)")
    ax.legend(loc="upper right")
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """Accuracy at small batches against BatchNorm and GroupNorm, and the train/eval gap."""
    named = [("accuracy", _accuracy_slide(results))]
    if {"batch", "batch_renorm"} <= set(results["norms"]):
        named.append(("gap", _gap_slide(results)))
    return named
