"""Does Post-LN need a learning-rate warm-up? Pre-LN vs Post-LN with Adam, with and without.

The question: Xiong et al. (2020, "On Layer Normalization in the Transformer
Architecture", §3 and Fig. 2) found that a Post-LN transformer trained with Adam at a
constant learning rate from the first step fails to train, while the same model with a
linear warm-up trains, and that a Pre-LN transformer trains with or without it. Their
explanation (``placement_gradients``): at initialization Post-LN's gradients near the
output are large, and Adam's first updates, whose second-moment estimates rest on a
handful of gradients, are large steps in every coordinate; a warm-up keeps those first
steps small until the model has left the region where they hurt.

Setup: the character-level :class:`normlab.nn.TransformerLM` with ``num_layers`` blocks
(LayerNorm, sinusoidal positions), Post-LN and Pre-LN, trained on the corpus with Adam at
each learning rate, either at the full rate from the first update or after a linear warm-up
of ``warmup_steps`` updates; after that the rate is constant, so the two schedules differ
only in the warm-up. The two learning rates are chosen without looking at this experiment:
the rate chosen on validation for the small Pre-LN model (``bench_transformer
--demo-lr-sweep``, the default of :class:`normlab.training.LMTrainingSetup`) and about
three times that. Every run of a seed starts from the same initialization (per placement)
and sees the same batches. Measured: the validation loss (nats per character) during
training; a run "fails" when its final validation loss is not below the unigram baseline
(predicting each character from its frequency alone, whatever came before).

What would refute Xiong et al.'s finding at this size: at every learning rate, Post-LN
without warm-up ending as low as Post-LN with warm-up (within the spread over seeds); or
Pre-LN failing without warm-up where Post-LN with warm-up trains. The README gives the
numbers of the default run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from normlab import plotting, training
from normlab.experiments.framework import (
    SweepOptions,
    choices,
    integer,
    numbers,
    seeds,
)
from normlab.experiments.language_model import (
    LanguageModelConfig,
    median_of_finite,
    model_config,
    training_setup,
)

NAME = "placement_warmup"

#: The placements: key (of plotting.METHODS) -> ``norm_first``.
PLACEMENTS = {"post_ln": False, "pre_ln": True}

#: The learning-rate schedules: key -> whether the first ``warmup_steps`` updates warm up.
SCHEDULES = {"warmup": True, "no_warmup": False}

_SCHEDULE_LINES = {"warmup": "-", "no_warmup": "--"}
_SCHEDULE_LABELS = {"warmup": "with warm-up", "no_warmup": "no warm-up"}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(LanguageModelConfig):
    """What to train. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    placements : tuple of str
        Keys of :data:`PLACEMENTS`.
    schedules : tuple of str
        Keys of :data:`SCHEDULES`: ``"warmup"`` (linear from 0 over ``warmup_steps``
        updates) and ``"no_warmup"`` (the full rate from the first update).
    learning_rates : tuple of float
        Adam's rate after the warm-up, one panel each.
    seeds : tuple of int
        One initialization and batch order per seed.
    num_layers, d_model, ... : see :class:`LanguageModelConfig`.
    """

    placements: tuple[str, ...] = choices(("post_ln", "pre_ln"), PLACEMENTS)
    schedules: tuple[str, ...] = choices(("warmup", "no_warmup"), SCHEDULES)
    learning_rates: tuple[float, ...] = numbers((3e-3, 1e-2), above=0)
    num_layers: int = integer(6, minimum=1)
    steps: int = integer(200, minimum=1)
    warmup_steps: int = integer(40, minimum=1, why="the warm-up schedule needs one update")
    eval_every: int = integer(20, minimum=1)
    eval_windows: int = integer(64, minimum=1)
    seeds: tuple[int, ...] = seeds(2)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            learning_rates=(1e-2,),
            num_layers=4,
            d_model=16,
            dim_feedforward=32,
            context_length=16,
            batch_size=8,
            steps=60,
            warmup_steps=15,
            eval_every=20,
            eval_windows=32,
        )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def measure_one(run: dict) -> dict:
    """Train one (placement, schedule, learning rate, seed); its validation curve."""
    architecture = model_config(run, norm="layer", norm_first=PLACEMENTS[run["placement"]])
    warmup = run["warmup_steps"] if SCHEDULES[run["schedule"]] else 0
    setup = training_setup(run, lr=run["lr"], warmup_steps=warmup)
    result = training.train_language_model(architecture, setup, seed=run["seed"])
    return {
        key: result[key]
        for key in (
            "eval_steps",
            "validation_loss",
            "train_loss",
            "learning_rate",
            "final_validation_loss",
            "unigram_baseline",
            "diverged",
            "corpus",
        )
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Train every (placement, schedule, learning rate, seed); plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``; ``placements``, ``schedules``, ``learning_rates``;
        ``eval_steps``: the steps of the curves (of a run that did not diverge);
        ``validation_loss[lr][placement][schedule]``: lists over seeds of curves (a
        diverged run's curve stops early);
        ``final_validation_loss[lr][placement][schedule]``: list over seeds (None: diverged);
        ``unigram_baseline``; ``corpus``; ``headline``.
    """
    runs = config.runs(
        lr="learning_rates", placement="placements", schedule="schedules", seed="seeds"
    )
    measured = runs.measure(NAME, measure_one, options)
    curves, finals = {}, {}
    for lr in config.learning_rates:
        curves[str(lr)], finals[str(lr)] = {}, {}
        for placement in config.placements:
            curves[str(lr)][placement], finals[str(lr)][placement] = {}, {}
            for schedule in config.schedules:
                one = measured.table(None, lr=lr, placement=placement, schedule=schedule)
                curves[str(lr)][placement][schedule] = [r["validation_loss"] for r in one]
                finals[str(lr)][placement][schedule] = [r["final_validation_loss"] for r in one]
    first = measured.results[0]
    results = {
        "config": config.to_dict(),
        "placements": list(config.placements),
        "schedules": list(config.schedules),
        "learning_rates": list(config.learning_rates),
        "eval_steps": max((r["eval_steps"] for r in measured.results), key=len),
        "validation_loss": curves,
        "final_validation_loss": finals,
        "unigram_baseline": first["unigram_baseline"],
        "corpus": first["corpus"],
    }
    results["headline"] = _headline(results)
    return results


def failed(final_loss: float | None, unigram_baseline: float) -> bool:
    """A run fails when it diverged or ends no better than predicting character frequencies."""
    return final_loss is None or final_loss >= unigram_baseline


def _headline(results: dict) -> dict:
    baseline = results["unigram_baseline"]
    headline = {"unigram_baseline": baseline, "num_layers": results["config"]["num_layers"]}
    for lr, by_placement in results["final_validation_loss"].items():
        entry = {}
        for placement, by_schedule in by_placement.items():
            for schedule, finals in by_schedule.items():
                entry[f"{placement}_{schedule}"] = {
                    "median_final_validation_loss": median_of_finite(finals),
                    "failed_runs": sum(failed(value, baseline) for value in finals),
                    "runs": len(finals),
                }
        headline[f"lr_{lr}"] = entry
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """Validation loss against steps, one panel per learning rate, a line per placement and
    schedule (solid: warm-up, dashed: none), with the unigram baseline."""
    config = results["config"]
    rates = results["learning_rates"]
    figure, axes = plotting.subplots(1, len(rates), width=7.5 * len(rates), height=6.2, sharey=True)
    axes = np.atleast_1d(axes)
    baseline = results["unigram_baseline"]
    for ax, lr in zip(axes, rates, strict=True):
        for placement in results["placements"]:
            look = plotting.method_style(placement)
            for schedule in results["schedules"]:
                curves = results["validation_loss"][str(lr)][placement][schedule]
                length = min(len(curve) for curve in curves)  # a diverged run stops early
                steps = results["eval_steps"][:length]
                table = np.asarray([curve[:length] for curve in curves]).T  # (points, seeds)
                fails = sum(
                    failed(value, baseline)
                    for value in results["final_validation_loss"][str(lr)][placement][schedule]
                )
                note = f" ({fails} of {len(curves)} failed)" if fails else ""
                plotting.plot_spread(
                    ax,
                    steps,
                    table,
                    color=look["color"],
                    marker=look["marker"],
                    linestyle=_SCHEDULE_LINES[schedule],
                    markerfacecolor=look["color"] if schedule == "warmup" else "white",
                    markevery=max(1, len(steps) // 8),
                    label=f"{look['label']}, {_SCHEDULE_LABELS[schedule]}{note}",
                )
        plotting.reference_line(ax, results["eval_steps"], [baseline] * len(results["eval_steps"]))
        plotting.annotate(ax, "unigram baseline", (results["eval_steps"][-1], baseline), ha="right")
        ax.axvspan(0, config["warmup_steps"], color="#eeeeee", lw=0, zorder=0)
        ax.set_title(f"Adam, learning rate {lr:g}", loc="left")
        ax.set_xlabel("update step")
        ax.legend(loc="upper right", fontsize=11)
    top = max(baseline + 0.6, 0.0)
    axes[0].set_ylim(None, top)
    axes[0].set_ylabel("validation loss (nats per character)")
    plotting.set_title(
        figure,
        "Does Post-LN need a warm-up? (cf. Xiong et al. 2020, Fig. 2)",
        f"Character-level transformer, {config['num_layers']} blocks, LayerNorm, d_model = "
        f"{config['d_model']}, {config['num_heads']} heads, context {config['context_length']}, "
        f"batch {config['batch_size']}, {config['steps']} Adam updates; warm-up: linear over the "
        f"first {config['warmup_steps']} (grey), then constant; "
        f"{plotting.spread_caption(len(config['seeds']))}. Failed: final validation loss not "
        "below the unigram baseline.",
    )
    return figure


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summary(results: dict) -> str:
    """Final validation loss of every combination and which runs failed, from ``results``."""
    headline = results["headline"]
    baseline = headline["unigram_baseline"]
    lines = [f"final validation loss, nats per character (unigram baseline {baseline:.2f}):"]
    for lr in results["learning_rates"]:
        for placement in results["placements"]:
            for schedule in results["schedules"]:
                entry = headline[f"lr_{lr}"][f"{placement}_{schedule}"]
                label = f"{plotting.method_label(placement)}, {_SCHEDULE_LABELS[schedule]}"
                median = entry["median_final_validation_loss"]
                loss = "diverged" if median is None else f"{median:.3f}"
                failed_runs = entry["failed_runs"]
                verdict = f"  {failed_runs} of {entry['runs']} failed" if failed_runs else ""
                lines.append(f"  lr {lr:<7g} {label:26s} {loss}{verdict}")
    failures = failed_combinations(results)
    if failures:
        lines.append("failed (not below the unigram baseline): " + "; ".join(failures))
    else:
        lines.append("every run trained (below the unigram baseline)")
    return "\n".join(lines)


def failed_combinations(results: dict) -> list[str]:
    """Each (learning rate, placement, schedule) with a failed run, in words with the count."""
    headline = results["headline"]
    return [
        f"{plotting.method_label(placement)} {_SCHEDULE_LABELS[schedule]} at lr {lr:g} "
        f"({entry['failed_runs']} of {entry['runs']})"
        for lr in results["learning_rates"]
        for placement in results["placements"]
        for schedule in results["schedules"]
        for entry in (headline[f"lr_{lr}"][f"{placement}_{schedule}"],)
        if entry["failed_runs"]
    ]


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------


def _failures(results: dict, lr) -> dict[tuple[str, str], tuple[int, int]]:
    """(placement, schedule) -> (failed runs, runs) at learning rate ``lr``."""
    entries = results["headline"][f"lr_{lr}"]
    return {
        (placement, schedule): (
            entries[f"{placement}_{schedule}"]["failed_runs"],
            entries[f"{placement}_{schedule}"]["runs"],
        )
        for placement in results["placements"]
        for schedule in results["schedules"]
    }


def slide_learning_rate(results: dict):
    """The learning rate with the most failed runs (the largest one on a tie)."""
    return max(
        results["learning_rates"],
        key=lambda lr: (sum(failed for failed, _ in _failures(results, lr).values()), lr),
    )


def slide_title(results: dict) -> str:
    """What the runs at :func:`slide_learning_rate` show about Post-LN and the warm-up."""
    lr = slide_learning_rate(results)
    failures = _failures(results, lr)
    if not any(failed for failed, _ in failures.values()):
        return (
            f"At this size every run trains, up to learning rate {lr:g}: Post-LN does not need "
            "a warm-up here"
        )
    cold = failures.get(("post_ln", "no_warmup"), (0, 0))
    others = [value for key, value in failures.items() if key != ("post_ln", "no_warmup")]
    if cold[0] and not any(failed for failed, _ in others):
        return (
            f"At learning rate {lr:g}, Post-LN without warm-up fails to train ({cold[0]} of "
            f"{cold[1]} runs); with a warm-up it trains, and Pre-LN trains either way"
        )
    failing = [
        f"{plotting.method_label(placement)} {_SCHEDULE_LABELS[schedule]} ({failed} of {runs})"
        for (placement, schedule), (failed, runs) in failures.items()
        if failed
    ]
    return f"At learning rate {lr:g}, runs fail to train: " + ", ".join(failing)


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: validation loss against steps at the learning rate with the most failures."""
    config = results["config"]
    lr = slide_learning_rate(results)
    baseline = results["unigram_baseline"]
    figure, ax = plotting.slide_figure(
        slide_title(results),
        f"{config['num_layers']} blocks, Adam; grey: the warm-up; "
        + plotting.spread_caption(len(config["seeds"])),
    )
    for placement in results["placements"]:
        look = plotting.method_style(placement)
        for schedule in results["schedules"]:
            curves = results["validation_loss"][str(lr)][placement][schedule]
            length = min(len(curve) for curve in curves)  # a diverged run stops early
            table = np.asarray([curve[:length] for curve in curves]).T  # (points, seeds)
            plotting.plot_spread(
                ax,
                results["eval_steps"][:length],
                table,
                color=look["color"],
                marker=look["marker"],
                linestyle=_SCHEDULE_LINES[schedule],
                markerfacecolor=look["color"] if schedule == "warmup" else "white",
                markevery=max(1, length // 5),
                label=f"{look['label']}, {_SCHEDULE_LABELS[schedule]}",
            )
    steps = results["eval_steps"]
    plotting.reference_line(ax, steps, [baseline] * len(steps), linewidth=3)
    plotting.annotate(
        ax,
        "guessing from letter frequencies",
        (steps[-1], baseline),
        above=-26,
        ha="right",
        fontsize=plotting.SLIDE_MIN_FONT_SIZE,
    )
    ax.axvspan(0, config["warmup_steps"], color="#eeeeee", lw=0, zorder=0)
    ax.set_ylim(None, baseline + 0.6)
    ax.set_xlim(0, 1.02 * steps[-1])
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss\n(nats per character)")
    ax.legend(loc="lower left")
    return [("warmup", figure)]
