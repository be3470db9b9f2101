"""When BatchNorm's running averages are wrong: precise BN against the samples it uses.

The question: eval mode normalizes with running averages of batch statistics, each
batch's statistics taken with the weights of its own step. When the weights move fast
and the average remembers many steps, the average describes a network that no longer
exists. How much accuracy does that cost, how much does *precise BN* (Wu & Johnson
2021, "Rethinking 'Batch' in BatchNorm": recompute the statistics with the weights held
fixed) give back, and from how many samples?

Setup. The digits MLP with BatchNorm (:class:`normlab.nn.MLP`, 64 → 64 × 2 → 10) trained
with SGD (momentum 0.9) at a large constant learning rate and batch size B, and measured
*mid-training*, at several checkpoints (the run is not stopped: each checkpoint measures a
copy of the network). Two BatchNorm momenta: PyTorch's default 0.1 (an average over
about the last 10 steps) and 0.01, Keras' default 0.99 in its own convention (about the
last 100 steps, and the starting values 0 and 1 still weigh (1 − 0.01)^k after k
steps). The momentum changes only the running averages: training normalizes with batch
statistics, so for a seed both momenta train exactly the same weights. At every checkpoint:

* eval mode with the running averages, for each momentum;
* train mode: the test set cut at random into batches of B, each normalized by its own
  statistics (:func:`normlab.training.train_mode_predictions`);
* precise BN from N training images (:func:`normlab.training.recompute_batchnorm_statistics`:
  running averages reset, then one train-mode pass of the N images as one batch with
  ``momentum=None``, no weight update), for N from a few dozen to all 1347, each N from
  ``subset_draws`` random subsets (their mean accuracy per seed).

Each point is the median over seeds, the band the min–max range. The headline gives, at
the probe checkpoint, every accuracy, precise BN's gain over the running averages for each
momentum with a paired bootstrap interval (same seeds, same test images;
:func:`normlab.stats.paired_comparison`), and the number of samples from which on precise
BN is within :data:`WITHIN_POINTS` of precise BN from the whole training set. Wu & Johnson
find that 10³–10⁴ samples suffice on ImageNet; the digits MLP has 64 features per layer
and ten classes, and may need fewer.

What would refute the claim that a long-horizon average mid-training is what precise BN
repairs: precise BN from the whole training set no better than the running averages with
momentum 0.01 at the probe checkpoint (the interval of the difference includes 0 or lies
below it), or a gap over the momentum-0.1 averages as large as over the momentum-0.01
ones (then the horizon is not the cause). The README gives the numbers of the default run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from normlab import plotting, stats, training
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    integers,
    number,
    numbers,
    seeds,
)

NAME = "precise_bn"

#: Training images of the digits split: the largest number of samples for precise BN.
TRAINING_SET_SIZE = 1347

#: "Enough samples": precise BN's median accuracy at most this many points below precise BN
#: from the whole training set.
WITHIN_POINTS = 0.5

#: The equivalence margin of the paired comparisons (a fraction: one point).
MARGIN = 0.01


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to train and measure. The defaults are the full figure; ``quick()`` a small one.

    Attributes
    ----------
    bn_momenta : tuple of float in (0, 1]
        BatchNorm momenta (PyTorch's convention: the weight of the new batch).
    checkpoints : tuple of int
        Training steps after which the network is measured (the run goes on).
    probe_step : int
        The checkpoint of the left panel and of the headline; one of ``checkpoints``.
    precise_samples : tuple of int in [2, 1347]
        How many training images precise BN recomputes the statistics from.
    subset_draws : int
        Random subsets per sample count and seed (all 1347 images are one subset).
    batch_size : int ≥ 2
        The SGD batch size B, and the test-batch size of train mode.
    learning_rate : float
        SGD's learning rate, constant: large on purpose (the weights move fast).
    hidden : int
        Width of the two hidden layers.
    seeds : tuple of int
        One training run per (momentum, seed).
    """

    bn_momenta: tuple[float, ...] = numbers((0.01, 0.1), above=0, maximum=1)
    checkpoints: tuple[int, ...] = integers((25, 50, 100, 200, 400, 800), minimum=1)
    probe_step: int = integer(50, minimum=1)
    precise_samples: tuple[int, ...] = integers(
        (16, 32, 64, 128, 256, 512, TRAINING_SET_SIZE), minimum=2, maximum=TRAINING_SET_SIZE
    )
    subset_draws: int = integer(3, minimum=1)
    batch_size: int = integer(32, minimum=2, maximum=TRAINING_SET_SIZE)
    learning_rate: float = number(0.3, above=0)
    hidden: int = integer(64, minimum=1)
    seeds: tuple[int, ...] = seeds(5)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            checkpoints=(25, 50),
            precise_samples=(16, 128, TRAINING_SET_SIZE),
            subset_draws=2,
            seeds=(0, 1, 2),
        )

    def validate(self) -> None:
        if self.probe_step not in self.checkpoints:
            raise ValueError(
                f"probe_step must be one of checkpoints {self.checkpoints}, got {self.probe_step}"
            )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def measure_checkpoint(model, run: dict, step: int) -> dict:
    """Every way of normalizing at test time, for the network after ``step`` steps.

    ``model`` is a copy, changed freely. The random subsets and test batches are drawn
    from a generator seeded with ``(seed, step)``, the same for every momentum.
    """
    split = training.digits()
    rng = np.random.default_rng([run["seed"], step])
    eval_predictions = training.predict(model, split.x_test)
    train_mode = training.train_mode_predictions(model, split.x_test, run["batch_size"], rng)
    precise = []  # (sample counts, draws)
    precise_correct = None
    for count in run["precise_samples"]:
        draws = 1 if count == len(split.x_train) else run["subset_draws"]
        accuracies = []
        for _ in range(draws):
            subset = (
                np.arange(count)
                if count == len(split.x_train)
                else rng.choice(len(split.x_train), count, replace=False)
            )
            recomputed = copy.deepcopy(model)
            training.recompute_batchnorm_statistics(recomputed, split.x_train[subset])
            correct = training.predict(recomputed, split.x_test) == split.y_test
            accuracies.append(float(np.mean(correct)))
        precise.append(float(np.mean(accuracies)))
        if count == max(run["precise_samples"]):
            precise_correct = correct.astype(int).tolist()
    eval_correct = eval_predictions == split.y_test
    return {
        "eval_accuracy": float(np.mean(eval_correct)),
        "eval_correct": eval_correct.astype(int).tolist(),
        "train_mode_accuracy": float(np.mean(train_mode == split.y_test)),
        "precise_accuracy": precise,
        "precise_largest_correct": precise_correct,
    }


def measure_one(run: dict) -> dict:
    """Train one network for the last checkpoint's steps, measuring it at every checkpoint."""
    checkpoints = set(run["checkpoints"])
    measured: dict[int, dict] = {}

    def at_checkpoint(step, model, loss, x, y) -> None:
        if step in checkpoints:
            measured[step] = measure_checkpoint(copy.deepcopy(model), run, step)

    numbers = training.train_mlp(
        norm="batch",
        batch_size=run["batch_size"],
        seed=run["seed"],
        epochs=1,  # unused: the budget is in steps
        steps=max(checkpoints),
        hidden=run["hidden"],
        base_lr=run["learning_rate"],
        lr_rule="constant",
        bn_momentum=run["bn_momentum"],
        on_step=at_checkpoint,
    )
    return {
        "checkpoints": [measured[step] for step in run["checkpoints"]],
        "diverged": numbers["diverged"],
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Train every (momentum, seed); return plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``; ``bn_momenta``; ``checkpoints``; ``precise_samples``;
        ``eval_accuracy``: per momentum, a list over checkpoints of lists over seeds;
        ``train_mode_accuracy``, ``precise_full_accuracy``: lists over checkpoints of
        lists over seeds (the same for every momentum: the weights are);
        ``precise_accuracy_at_probe``: per sample count a list over seeds;
        ``same_weights_for_every_momentum``: whether train mode and precise BN gave
        identical numbers for every momentum (they must);
        ``diverged_runs``; ``headline``.
    """
    measured = config.runs(bn_momentum="bn_momenta", seed="seeds").measure(
        NAME, measure_one, options
    )

    def table(key: str) -> np.ndarray:  # (momenta, seeds, checkpoints, ...)
        return measured.table(lambda result: [one[key] for one in result["checkpoints"]])

    eval_accuracy = table("eval_accuracy")
    train_mode = table("train_mode_accuracy")
    precise = table("precise_accuracy")  # (momenta, seeds, checkpoints, sample counts)
    same_weights = bool(
        np.array_equal(train_mode, train_mode[:1].repeat(len(train_mode), axis=0))
        and np.array_equal(precise, precise[:1].repeat(len(precise), axis=0))
    )
    probe = config.checkpoints.index(config.probe_step)
    return {
        "config": config.to_dict(),
        "bn_momenta": list(config.bn_momenta),
        "checkpoints": list(config.checkpoints),
        "precise_samples": list(config.precise_samples),
        "eval_accuracy": {
            _momentum_key(m): eval_accuracy[i].T.tolist() for i, m in enumerate(config.bn_momenta)
        },
        "train_mode_accuracy": train_mode[0].T.tolist(),
        "precise_full_accuracy": precise[0, :, :, -1].T.tolist(),
        "precise_accuracy_at_probe": precise[0, :, probe, :].T.tolist(),
        "same_weights_for_every_momentum": same_weights,
        "diverged_runs": int(measured.table("diverged").sum()),
        "headline": _headline(config, measured, eval_accuracy, train_mode, precise),
    }


def _momentum_key(momentum: float) -> str:
    return f"{momentum:g}"


def samples_needed(sample_counts, accuracy_by_count, reference) -> int | None:
    """The smallest count from which on every median is within WITHIN_POINTS of ``reference``.

    ``accuracy_by_count``: medians in percent, one per count (sorted ascending).
    """
    answer = None
    for count, accuracy in zip(sample_counts[::-1], accuracy_by_count[::-1], strict=True):
        if accuracy < reference - WITHIN_POINTS:
            break
        answer = count
    return answer


def _headline(config, measured, eval_accuracy, train_mode, precise) -> dict:
    probe = config.checkpoints.index(config.probe_step)
    precise_probe = 100 * np.median(precise[0, :, probe, :], axis=0)  # (sample counts,)
    full = float(precise_probe[-1])
    headline = {
        "probe_step": config.probe_step,
        "median_train_mode_accuracy_percent": float(100 * np.median(train_mode[0, :, probe])),
        "median_precise_accuracy_percent_by_samples": {
            str(count): float(value)
            for count, value in zip(config.precise_samples, precise_probe, strict=True)
        },
        "median_precise_largest_accuracy_percent": full,
        "precise_samples_needed": samples_needed(config.precise_samples, precise_probe, full),
        "largest_precise_samples": max(config.precise_samples),
        "per_momentum": {},
    }
    precise_correct = measured.table(
        lambda result: result["checkpoints"][probe]["precise_largest_correct"]
    )  # (momenta, seeds, test images)
    eval_correct = measured.table(lambda result: result["checkpoints"][probe]["eval_correct"])
    for index, momentum in enumerate(config.bn_momenta):
        comparison = stats.paired_comparison(
            precise_correct[index], eval_correct[index], margin=MARGIN
        )
        gains = 100 * (
            np.median(precise[index, :, :, -1], axis=0) - np.median(eval_accuracy[index], axis=0)
        )  # (checkpoints,)
        headline["per_momentum"][_momentum_key(momentum)] = {
            "median_eval_accuracy_percent": float(100 * np.median(eval_accuracy[index, :, probe])),
            "precise_minus_eval_points": 100 * comparison.mean_difference,
            "precise_minus_eval_interval_points": [100 * end for end in comparison.interval],
            "precise_versus_eval_verdict": comparison.verdict,
            "start_weight_at_probe": float((1 - momentum) ** config.probe_step),
            "median_gain_points_by_checkpoint": {
                str(step): float(gain) for step, gain in zip(config.checkpoints, gains, strict=True)
            },
        }
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

#: Eval mode takes BatchNorm's colour; the momenta differ by marker and line style.
_EVAL_COLOR = plotting.METHODS["batch"].color
_TRAIN_MODE_COLOR = plotting.COLORS["vermillion"]
_PRECISE_COLOR = plotting.COLORS["bluish_green"]
_MOMENTUM_LOOKS = (("o", "-"), ("D", "--"), ("P", ":"), ("X", "-."))


def _momentum_label(momentum: float) -> str:
    return f"eval mode, momentum {momentum:g} (Keras {1 - momentum:g})"


@plotting.styled
def plot(results: dict) -> Figure:
    """Left: accuracy against precise BN's samples at the probe. Right: over the checkpoints."""
    config = results["config"]
    headline = results["headline"]
    figure, (ax_samples, ax_steps) = plotting.subplots(1, 2, width=15.0, height=6.6, sharey=True)
    samples = np.asarray(results["precise_samples"])
    checkpoints = np.asarray(results["checkpoints"])
    probe = results["checkpoints"].index(config["probe_step"])

    plotting.plot_spread(
        ax_samples,
        samples,
        100 * np.asarray(results["precise_accuracy_at_probe"]),
        color=_PRECISE_COLOR,
        marker="^",
        label="precise BN from N training images",
    )
    for index, momentum in enumerate(results["bn_momenta"]):
        marker, linestyle = _MOMENTUM_LOOKS[index % len(_MOMENTUM_LOOKS)]
        per_step = 100 * np.asarray(results["eval_accuracy"][_momentum_key(momentum)])
        ax_samples.axhline(
            np.median(per_step[probe]),
            color=_EVAL_COLOR,
            linestyle=linestyle,
            label=_momentum_label(momentum) + " (median)",
        )
        plotting.plot_spread(
            ax_steps,
            checkpoints,
            per_step,
            color=_EVAL_COLOR,
            marker=marker,
            linestyle=linestyle,
            label=_momentum_label(momentum),
        )
    train_mode = 100 * np.asarray(results["train_mode_accuracy"])
    ax_samples.axhline(
        np.median(train_mode[probe]),
        color=_TRAIN_MODE_COLOR,
        linestyle="-.",
        label=f"train mode, test batches of {config['batch_size']} (median)",
    )
    plotting.plot_spread(
        ax_steps, checkpoints, train_mode, color=_TRAIN_MODE_COLOR, marker="s", label="train mode"
    )
    plotting.plot_spread(
        ax_steps,
        checkpoints,
        100 * np.asarray(results["precise_full_accuracy"]),
        color=_PRECISE_COLOR,
        marker="^",
        label=f"precise BN from {max(results['precise_samples'])} images",
    )
    ax_steps.axvline(config["probe_step"], color=plotting.REFERENCE_COLOR, linestyle=":")
    plotting.log2_axis(ax_samples, samples, label="N: training images precise BN uses")
    plotting.log2_axis(ax_steps, checkpoints, label="training step of the checkpoint")
    ax_samples.set_ylabel("test accuracy (%)")
    ax_samples.set_title(f"after {config['probe_step']} steps: how many samples?")
    ax_steps.set_title("over training (dotted: the left panel's checkpoint)")
    ax_samples.legend(loc="lower right", fontsize=11)
    ax_steps.legend(loc="lower right", fontsize=11)
    needed = headline["precise_samples_needed"]
    largest = max(results["precise_samples"])
    if needed is None:
        needed_text = f"no N is within {WITHIN_POINTS:g} points of the {largest}-image value"
    else:
        needed_text = (
            f"precise BN is within {WITHIN_POINTS:g} points of its {largest}-image value "
            f"from N = {needed} on"
        )
    spread = plotting.spread_caption(len(config["seeds"]), form="center_of")
    plotting.set_title(
        figure,
        "When running averages lag behind the weights, precise BN repairs them",
        f"Digits MLP 64→{config['hidden']}×2→10 with BatchNorm, SGD (momentum 0.9), constant "
        f"lr {config['learning_rate']:g}, B = {config['batch_size']}, measured mid-training; "
        "both BatchNorm momenta train the same weights (only the running averages differ). "
        f"{spread[0].upper()}{spread[1:]}; precise BN: mean of {config['subset_draws']} random "
        f"subsets per seed. At step {config['probe_step']}, {needed_text}.",
    )
    return figure


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summary(results: dict) -> str:
    """The numbers of the probe checkpoint and what they say, in words computed from them."""
    config, headline = results["config"], results["headline"]
    largest = headline["largest_precise_samples"]
    lines = [
        f"after {headline['probe_step']} steps (lr {config['learning_rate']:g}, "
        f"B = {config['batch_size']}), test accuracy in %, median of {len(config['seeds'])} seeds:"
    ]
    for momentum in results["bn_momenta"]:
        one = headline["per_momentum"][_momentum_key(momentum)]
        lines.append(
            f"  {_momentum_label(momentum):42s} {one['median_eval_accuracy_percent']:5.1f}   "
            f"(start values still weigh {one['start_weight_at_probe']:.3f})"
        )
    lines.append(
        f"  {'train mode, test batches of ' + str(config['batch_size']):42s} "
        f"{headline['median_train_mode_accuracy_percent']:5.1f}"
    )
    by_samples = headline["median_precise_accuracy_percent_by_samples"]
    lines.append(
        "  precise BN from N images:  "
        + ", ".join(
            f"N={count}: {by_samples[str(count)]:.1f}" for count in results["precise_samples"]
        )
    )
    lines.append(
        f"precise BN from {largest} images minus the running averages (paired, 95 % interval):"
    )
    for momentum in results["bn_momenta"]:
        one = headline["per_momentum"][_momentum_key(momentum)]
        low, high = one["precise_minus_eval_interval_points"]
        phrase = stats.verdict_phrase(one["precise_versus_eval_verdict"], "the running averages")
        lines.append(
            f"  momentum {momentum:g}: {one['precise_minus_eval_points']:+.2f} points "
            f"({low:+.2f} to {high:+.2f}): precise BN is {phrase}"
        )
    needed = headline["precise_samples_needed"]
    if needed is None:
        lines.append(f"no N tested is within {WITHIN_POINTS:g} points of all {largest} images")
    else:
        lines.append(
            f"precise BN is within {WITHIN_POINTS:g} points of all {largest} images from "
            f"N = {needed} on"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------


def _slide_momentum_label(momentum: float) -> str:
    return f"running average, momentum {momentum:g}"


def _gain_title(results: dict) -> str:
    """Precise BN against each momentum's running averages at the probe, by the paired verdicts.

    The verdicts come from the paired comparisons; the points quoted are the medians drawn.
    """
    probe = results["config"]["probe_step"]
    per_momentum = results["headline"]["per_momentum"]
    momenta = sorted(results["bn_momenta"])  # the longest memory first
    better = {
        momentum: per_momentum[_momentum_key(momentum)]["precise_versus_eval_verdict"] == "better"
        for momentum in momenta
    }
    probe_index = results["checkpoints"].index(probe)
    precise = 100 * np.median(results["precise_full_accuracy"][probe_index])
    gains = {  # median against median at the probe, as the slide draws them
        m: precise - 100 * np.median(results["eval_accuracy"][_momentum_key(m)][probe_index])
        for m in momenta
    }
    start = f"After {probe} steps, recomputed statistics"
    if all(better.values()):
        each = plotting.word_list([f"{gains[m]:.1f} (momentum {m:g})" for m in momenta])
        return f"{start} beat every running average, by {each} points"
    if better[momenta[0]] and len(momenta) > 1:
        short = plotting.word_list([f"{m:g}" for m in momenta[1:] if not better[m]])
        return (
            f"{start} beat the long running average (momentum {momenta[0]:g}) by "
            f"{gains[momenta[0]]:.1f} points, the short one ({short}) not clearly"
        )
    return f"{start} do not clearly beat the running averages"


def _steps_slide(results: dict) -> Figure:
    config = results["config"]
    checkpoints = results["checkpoints"]
    figure, ax = plotting.slide_figure(
        _gain_title(results),
        f"digits MLP, batch size {config['batch_size']}; "
        + plotting.spread_caption(len(config["seeds"]), form="center_of"),
    )
    for index, momentum in enumerate(results["bn_momenta"]):
        marker, linestyle = _MOMENTUM_LOOKS[index % len(_MOMENTUM_LOOKS)]
        plotting.plot_spread(
            ax,
            checkpoints,
            100 * np.asarray(results["eval_accuracy"][_momentum_key(momentum)]),
            color=_EVAL_COLOR,
            marker=marker,
            linestyle=linestyle,
            label=_slide_momentum_label(momentum),
        )
    plotting.plot_spread(
        ax,
        checkpoints,
        100 * np.asarray(results["precise_full_accuracy"]),
        color=_PRECISE_COLOR,
        marker="^",
        label=f"recomputed from all {max(results['precise_samples']):,} training images",
    )
    ax.axvline(config["probe_step"], color=plotting.REFERENCE_COLOR, linestyle=":", linewidth=2.5)
    plotting.log2_axis(ax, checkpoints, label="training step")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right")
    return figure


def _samples_slide(results: dict) -> Figure:
    config = results["config"]
    samples = results["precise_samples"]
    largest = max(samples)
    needed = results["headline"]["precise_samples_needed"]
    if needed is not None and needed < largest:
        title = (
            f"Recomputing the statistics from {needed:,} training images is enough: within "
            f"{WITHIN_POINTS:g} points of all {largest:,}"
        )
    else:
        title = f"Recomputed statistics need all {largest:,} training images here"
    figure, ax = plotting.slide_figure(
        title,
        f"at step {config['probe_step']}; "
        + plotting.spread_caption(len(config["seeds"]))
        + "; flat lines: running averages",
    )
    plotting.plot_spread(
        ax,
        samples,
        100 * np.asarray(results["precise_accuracy_at_probe"]),
        color=_PRECISE_COLOR,
        marker="^",
        label="recomputed statistics",
    )
    probe = results["checkpoints"].index(config["probe_step"])
    for index, momentum in enumerate(results["bn_momenta"]):
        _, linestyle = _MOMENTUM_LOOKS[index % len(_MOMENTUM_LOOKS)]
        per_step = 100 * np.asarray(results["eval_accuracy"][_momentum_key(momentum)])
        ax.axhline(
            np.median(per_step[probe]),
            color=_EVAL_COLOR,
            linestyle=linestyle,
            label=_slide_momentum_label(momentum),
        )
    plotting.log2_axis(ax, samples, label="training images used to recompute")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right")
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """What precise BN gains over each running average, and from how many samples."""
    return [("gain", _steps_slide(results)), ("samples", _samples_slide(results))]
