"""Along the gradient during training: how much the loss and its gradient change, with each norm.

The question: if not internal covariate shift, what does BatchNorm change? Santurkar,
Tsipras, Ilyas & Mądry (2018, "How Does Batch Normalization Help Optimization?",
Section 3, Figure 4) answer: the loss landscape. With BatchNorm the loss changes less,
and more predictably, along the gradient direction, and the gradient itself changes less
when one steps along it, so larger steps are safe. They measured it at points of
training: at the current weights w with gradient g, for a range of step sizes η,

* **loss variation**: the range (max − min) of ``L(w − η g)`` over η;
* **gradient predictiveness**: ``max_η ‖∇L(w − η g) − ∇L(w)‖``, how far the gradient moves;
* **effective β-smoothness**: ``max_η ‖∇L(w − η g) − ∇L(w)‖ / ‖η g‖``, the gradient's
  Lipschitz constant along the step.

Smaller is smoother for all three.

Setup. The digits MLPs of ``learning_rate_maps`` (``depths`` hidden blocks) with each
method in ``norms``, trained by :func:`normlab.training.fit` with SGD (momentum
``momentum``), batch size ``batch_size`` and the constant learning rate ``learning_rate``
(in the stable range of BatchNorm and of no normalization on both MLPs in
``learning_rate_maps``), for ``steps`` steps. After every ``probe_every`` steps, on the
batch of that step (train mode, so BatchNorm uses that batch's statistics, as in
training), the gradient g is computed and the loss and the gradient are evaluated at
``w − η g`` for every η in ``step_sizes`` (every parameter moved; then put back, and the
running statistics are left as they were). The step sizes run from a third of the
learning rate to about the step that SGD with momentum 0.9 takes (ten times the rate),
and beyond. A loss that is not finite at some η marks the probe as blown up (the range is
then unbounded; it is kept as None).

The three measures are not divided by ‖g‖: a method whose gradient is larger takes larger
steps at the same η, which is part of what a learning rate meets. ‖g‖ is recorded beside
them.

What would refute the claim "BatchNorm makes the loss landscape smoother" at this scale:
a median loss variation, gradient change or β-smoothness of BatchNorm as large as or
larger than without normalization over training. The README gives the numbers of the
default run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from normlab import nn, plotting, training
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    choices,
    integer,
    integers,
    number,
    numbers,
    seeds,
)
from normlab.layers import NORM_KINDS

NAME = "loss_landscape"

#: The methods compared, in legend order (keys of ``plotting.METHODS``).
METHODS = ("none", "batch", "layer")

#: The measures of one probe (keys of the results), with their axis labels.
MEASURES = {
    "loss_variation": "loss variation along g\nmax − min of L(w − ηg)",
    "gradient_change": "gradient predictiveness\nmax ‖∇L(w − ηg) − ∇L(w)‖",
    "beta_smoothness": "effective β-smoothness\nmax ‖Δ∇L‖ / ‖ηg‖",
}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to train and probe. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    norms : tuple of str
    depths : tuple of int, hidden blocks of the MLPs.
    seeds : tuple of int, one training run per (depth, norm, seed).
    steps, batch_size, learning_rate, momentum : the training.
    probe_every : int, steps between probes.
    step_sizes : tuple of float, the η of every probe.
    """

    norms: tuple[str, ...] = choices(METHODS, NORM_KINDS)
    depths: tuple[int, ...] = integers((2, 8), minimum=1)
    seeds: tuple[int, ...] = seeds(3)
    steps: int = integer(300, minimum=1)
    batch_size: int = integer(32, minimum=2, why="BatchNorm needs two samples per batch")
    learning_rate: float = number(0.03, above=0)
    momentum: float = number(0.9, minimum=0, below=1)
    probe_every: int = integer(10, minimum=1)
    step_sizes: tuple[float, ...] = numbers((0.01, 0.02, 0.05, 0.1, 0.2, 0.4), above=0)

    @classmethod
    def quick(cls) -> Config:
        return cls(norms=("none", "batch"), depths=(2,), steps=60, probe_every=20)

    def validate(self) -> None:
        if self.probe_every > self.steps:
            raise ValueError(
                f"probe_every must be ≤ steps (at least one probe), got probe_every="
                f"{self.probe_every} and steps={self.steps}"
            )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def _gradient(model, x, y) -> tuple[float, dict[str, np.ndarray]]:
    """Loss on (x, y) and a copy of every parameter's gradient (train mode)."""
    with np.errstate(all="ignore"):
        loss, dlogits = nn.softmax_cross_entropy(model(x), y)
        if math.isfinite(loss):
            model.backward(dlogits)
    return loss, {name: np.array(grad) for name, grad in model.grads.items()}


def _norm(arrays) -> float:
    return math.sqrt(sum(float(np.sum(np.square(array, dtype=np.float64))) for array in arrays))


def probe_along_gradient(model, x, y, step_sizes) -> dict:
    """The loss and the gradient at ``w − η g`` for every η; the model is left unchanged.

    Returns the three measures of the module docstring (None when a loss is not finite),
    the loss at w and ‖g‖.
    """
    with training.running_statistics_kept(model):
        model.train()
        loss, gradient = _gradient(model, x, y)
        start = {name: np.array(value) for name, value in model.params.items()}
        gradient_norm = _norm(gradient.values())
        losses, changes = [loss], []
        for eta in step_sizes:
            for name, value in model.params.items():
                value[...] = start[name] - eta * gradient[name]
            moved_loss, moved_gradient = _gradient(model, x, y)
            losses.append(moved_loss)
            changes.append(_norm(moved_gradient[name] - gradient[name] for name in gradient))
        for name, value in model.params.items():
            value[...] = start[name]
    finite = all(math.isfinite(value) for value in losses + changes)
    smoothness = [
        change / (eta * gradient_norm) for change, eta in zip(changes, step_sizes, strict=True)
    ]
    return {
        "loss": float(loss),
        "gradient_norm": gradient_norm,
        "loss_variation": float(max(losses) - min(losses)) if finite else None,
        "gradient_change": float(max(changes)) if finite else None,
        "beta_smoothness": float(max(smoothness)) if finite and gradient_norm > 0 else None,
    }


def measure_one(run: dict) -> dict:
    """One network trained at the run's learning rate, probed every ``probe_every`` steps."""
    probes: list[dict] = []

    def on_step(step, model, loss, x, y):
        if step % run["probe_every"] == 0:
            probes.append({"step": step, **probe_along_gradient(model, x, y, run["step_sizes"])})

    rng = np.random.default_rng(run["seed"])
    split = training.digits()
    model = nn.MLP(
        split.num_features, 64, split.num_classes, norm=run["norm"], rng=rng, depth=run["depth"]
    )
    numbers = training.fit(
        model,
        split,
        rng,
        batch_size=run["batch_size"],
        epochs=1,
        steps=run["steps"],
        base_lr=run["learning_rate"],
        lr_rule="constant",
        momentum=run["momentum"],
        on_step=on_step,
    )
    return {
        "probe_steps": [probe["step"] for probe in probes],
        **{key: [probe[key] for probe in probes] for key in ("loss", "gradient_norm", *MEASURES)},
        "test_accuracy": numbers["test_accuracy_eval"],
        "diverged": numbers["diverged"],
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Train and probe every (depth, norm, seed); return plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``; ``depths``; ``norms``; ``probe_steps``;
        ``by_depth[str(depth)][norm][measure]``: seeds × probes (None where blown up), for
        the measures of :data:`MEASURES` and ``gradient_norm``; ``test_accuracy`` per seed;
        ``headline``: per depth and norm the median over seeds and probes of each measure
        (blown-up probes counted as larger than any finite value), and how many blew up.
    """
    measured = config.runs(depth="depths", norm="norms", seed="seeds").measure(
        NAME, measure_one, options
    )
    by_depth = {}
    for depth in config.depths:
        by_depth[str(depth)] = {
            norm: {
                key: measured.table(key, depth=depth, norm=norm).tolist()
                for key in ("gradient_norm", "test_accuracy", "diverged", *MEASURES)
            }
            for norm in config.norms
        }
    results = {
        "config": config.to_dict(),
        "depths": list(config.depths),
        "norms": list(config.norms),
        "probe_steps": measured.results[0]["probe_steps"],
        "by_depth": by_depth,
    }
    results["headline"] = _headline(results)
    return results


def median_with_blowups(values) -> float | None:
    """Median of a nested list in which None (a blown-up probe) counts as +∞; None if ∞."""
    flat = np.array(
        [
            math.inf if value is None else value
            for value in np.ravel(np.array(values, dtype=object))
        ],
        dtype=float,
    )
    median = float(np.median(flat))
    return median if math.isfinite(median) else None


def _headline(results: dict) -> dict:
    headline = {}
    for depth, entry in results["by_depth"].items():
        per_norm = {}
        for norm, values in entry.items():
            per_norm[norm] = {
                f"median_{key}": median_with_blowups(values[key])
                for key in (*MEASURES, "gradient_norm")
            }
            per_norm[norm]["blown_up_probes"] = int(
                sum(value is None for row in values["loss_variation"] for value in row)
            )
        depth_headline = {"per_norm": per_norm}
        if "none" in entry and "batch" in entry:
            for key in MEASURES:
                none, batch = per_norm["none"][f"median_{key}"], per_norm["batch"][f"median_{key}"]
                depth_headline[f"none_over_batch_{key}"] = (
                    none / batch if none is not None and batch else None
                )
        headline[f"depth_{depth}"] = depth_headline
    return headline


def summary(results: dict) -> str:
    """Per depth and method: the medians over seeds and probes; then none / BatchNorm."""
    keys = (*MEASURES, "gradient_norm")
    lines = [f"{'depth':>5} {'method':>6}" + "".join(f"{key:>17}" for key in keys)]
    for depth in results["depths"]:
        entry = results["headline"][f"depth_{depth}"]
        for norm in results["norms"]:
            values = [entry["per_norm"][norm][f"median_{key}"] for key in keys]
            cells = "".join(f"{'blew up':>17}" if v is None else f"{v:17.4g}" for v in values)
            lines.append(f"{depth:>5} {norm:>6}" + cells)
        ratios = [entry.get(f"none_over_batch_{key}") for key in MEASURES]
        if any(ratio is not None for ratio in ratios):
            cells = "".join(f"{'–':>17}" if r is None else f"{r:17.2f}" for r in ratios)
            lines.append(f"{'':>5} {'none/BN':>6}" + cells + "   (> 1: smoother with BatchNorm)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """One row per depth, one column per measure: the measure against the training step."""
    config = results["config"]
    depths, norms = results["depths"], results["norms"]
    steps = np.asarray(results["probe_steps"])
    figure, axes = plotting.subplots(
        len(depths), len(MEASURES), width=6.4 * len(MEASURES), height=4.8 * len(depths) + 1.4
    )
    axes = np.asarray(axes).reshape(len(depths), len(MEASURES))
    for row, depth in enumerate(depths):
        for column, (key, label) in enumerate(MEASURES.items()):
            ax = axes[row, column]
            for norm in norms:
                values = np.array(
                    [
                        [np.nan if v is None else v for v in seed]
                        for seed in results["by_depth"][str(depth)][norm][key]
                    ],
                    dtype=float,
                )  # (seeds, probes); NaN where a probe blew up
                looks = plotting.method_style(norm)
                plotting.plot_spread(
                    ax,
                    steps,
                    values.T,
                    color=looks["color"],
                    marker=looks["marker"],
                    label=looks["label"],
                    markevery=max(1, len(steps) // 6),
                )
            ax.set_yscale("log")
            ax.set_xlabel("training step")
            ax.set_ylabel(label, fontsize=13)
            ax.set_title(f"{depth} hidden blocks", fontsize=15)
        axes[row, 0].legend(fontsize=12)
    sizes = ", ".join(f"{eta:g}" for eta in config["step_sizes"])
    plotting.set_title(
        figure,
        "Is the loss smoother along the gradient with BatchNorm? "
        "(cf. Santurkar et al. 2018, Fig. 4)",
        f"Digits MLPs, SGD (momentum {config['momentum']:g}), lr {config['learning_rate']:g}, "
        f"B = {config['batch_size']}; every {config['probe_every']} steps, on that step's batch: "
        f"L and ∇L at w − ηg for η = {sizes}. "
        f"{plotting.spread_caption(len(config['seeds']))[0].upper()}"
        f"{plotting.spread_caption(len(config['seeds']))[1:]}; lower is smoother.",
    )
    return figure


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------


def slide_title(results: dict) -> str:
    """Is the loss smoother along the gradient with BatchNorm, depth by depth, in words."""
    ratios = {
        depth: results["headline"][f"depth_{depth}"].get("none_over_batch_loss_variation")
        for depth in results["depths"]
    }  # > 1: the loss varies less with BatchNorm
    ratios = {depth: ratio for depth, ratio in ratios.items() if ratio is not None}
    if not ratios:
        return "How much the loss changes along the gradient during training"
    smoother = [depth for depth, ratio in ratios.items() if ratio > 1]
    if len(smoother) == len(ratios):
        verdict = "BatchNorm smooths the loss"
    elif not smoother:
        verdict = "BatchNorm does not smooth the loss here"
    else:
        verdict = f"BatchNorm smooths the loss only at {' and '.join(map(str, smoother))} blocks"
    changes = [
        f"{plotting.rounded(1 / ratio, 2)}× ({depth} blocks)" for depth, ratio in ratios.items()
    ]
    return (
        f"{verdict}: along the gradient it varies " + " and ".join(changes) + " as much as without"
    )


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: the loss variation along the gradient against the step, a panel per depth."""
    config = results["config"]
    depths = results["depths"]
    steps = np.asarray(results["probe_steps"])
    figure, axes = plotting.slide_figure(
        slide_title(results),
        "digits MLPs; loss range along the gradient; "
        + plotting.spread_caption(len(config["seeds"])),
        ncols=len(depths),
        sharey=True,
    )
    axes = np.atleast_1d(axes)
    for ax, depth in zip(axes, depths, strict=True):
        for norm in results["norms"]:
            values = np.array(
                [
                    [np.nan if v is None else v for v in seed]
                    for seed in results["by_depth"][str(depth)][norm]["loss_variation"]
                ],
                dtype=float,
            )  # (seeds, probes); NaN where a probe blew up
            plotting.plot_spread(
                ax,
                steps,
                values.T,
                markevery=max(1, len(steps) // 5),
                **plotting.method_style(norm),
            )
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(f"{depth} hidden {'block' if depth == 1 else 'blocks'}")
    axes[0].set_ylabel("how much the loss changes\nalong the gradient")
    low, high = axes[0].get_ylim()
    plotting.plain_log_labels(axes[0].yaxis, minor=high / low < 100)  # 2, 3, 5 within 2 decades
    axes[-1].legend(loc="lower left")
    return [("smoothness", figure)]
