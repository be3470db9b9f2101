"""Scale invariance before a norm, and how weight decay then sets the effective learning rate.

The question: a weight followed by a normalization cannot change the network's function
by its length, only by its direction. So is weight decay, which only shrinks lengths,
meaningless there? Van Laarhoven (2017, "L2 Regularization versus Batch and Weight
Normalization") and Li & Arora (2019, "An Exponential Learning Rate Schedule for Deep
Learning") answer no: it changes how fast the direction moves.

Theory. Let w feed a normalization, so that L(c·w) = L(w) for every c > 0 (scale
invariance; for BatchNorm each output unit's column on its own, for LayerNorm and RMSNorm
the whole weight with the bias, which must be scaled with it). Differentiating in c at
c = 1 gives w·∇L(w) = 0: the gradient is orthogonal to the weight. Differentiating in w
gives ∇L(c·w) = ∇L(w)/c: a longer weight gets a proportionally smaller gradient, so the
relative step ‖Δw‖/‖w‖ = η‖∇L‖/‖w‖ scales like η/‖w‖², an *effective learning rate*.
Plain SGD with weight decay λ (no momentum) updates w ← (1 − ηλ)w − ηg with g ⊥ w, so

    ‖w_{t+1}‖² = (1 − ηλ)² ‖w_t‖² + η² ‖g_t‖².

With λ = 0 the norm only grows (by Pythagoras, ‖w_T‖² = ‖w_0‖² + η² Σ‖g_t‖²) and the
angular step η‖g‖/‖w‖ shrinks. With λ > 0 the norm settles where the two terms balance,
(2ηλ − η²λ²)‖w‖² = η²E‖g‖², and then the angle between successive weights is

    θ ≈ η‖g‖/‖w‖ = √(2ηλ − η²λ²) ≈ √(2ηλ),

whatever the loss and the gradient's size. Assumptions: plain SGD (with momentum μ the
equilibrium is √(2ηλ/(1 + μ)), Wan et al. 2021), exact scale invariance (ε in the
normalization breaks it when the pre-normalization variance is near ε), a gradient whose
size changes slowly compared with the time to equilibrium (about 1/(4ηλ) steps near it;
from a weight far longer than the equilibrium, the excess first decays like (1 − ηλ)^{2t},
which takes longer), and a small angle. The root mean square of θ over a window estimates
√E θ², the quantity the balance predicts.

Setup. (a) The check, in float64: the shallow digits MLP (``Linear → norm → ReLU`` twice,
then a head) with each method of ``norms``, on one batch of ``check_batch_size`` training
images in train mode: for the first hidden layer's parameters θ (its weight, and its bias
when it has one), the cosine of θ and ∇_θL, and ``c·‖∇L(c·θ)‖ / ‖∇L(θ)‖`` for every c in
``scale_factors`` (1 when invariant). (b) The dynamics: the BatchNorm MLP trained with
plain SGD at learning rate ``learning_rate``, batch size ``batch_size``, for ``steps``
steps, with each weight decay in ``weight_decays`` (applied to every parameter, as the
optimizer does); after every step, ‖W‖ of each hidden layer's weight and the angle between
its weights before and after the step; averaged over windows of ``record_every`` steps.
The measured angular update is the root mean square angle over the last quarter of
training, against √(2ηλ).

The check runs with each layer's default ε and with ε = 1e-12: ε in √(var + ε) is the one
place where a normalization is not exactly scale invariant, most visibly at c < 1.

What would refute the claims: for a weight before a normalization, a cosine of θ and ∇L,
or a change of c·‖∇L(cθ)‖, that is not at rounding level (1e-10 or less in float64) once ε
is negligible; a norm that does not grow without weight decay; or, once ‖W‖ has settled
(its mean over the last eighth of training within 5 % of that over the eighth before, on
average over the seeds), an
angular update more than 20 % away from √(2ηλ). The README gives the numbers of the
default run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from normlab import nn, plotting, stats, training
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    choices,
    integer,
    number,
    numbers,
    seeds,
)
from normlab.layers import NORM_KINDS

NAME = "effective_learning_rate"

#: The methods of the invariance check, in legend order.
METHODS = ("none", "batch", "layer", "rms")

#: The hidden Linear layers of the depth-2 MLP (indices in the Sequential).
HIDDEN_LAYERS = (0, 3)

#: "Within 20 %": the agreement with √(2ηλ) that the docstring states before measuring.
AGREEMENT = 0.2

#: At equilibrium: the mean ‖W‖ over the second half of the measured last quarter is within
#: this fraction of that over its first half, on average over the seeds, in every hidden
#: layer (the balance of expectations the derivation assumes; one seed's norm fluctuates).
STATIONARY = 0.05

#: The ε of the check: each layer's default, and one too small to matter in float64.
CHECK_EPS = {"default": None, "negligible": 1e-12}


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to check and train. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    norms : tuple of str, the methods of the invariance check.
    scale_factors : tuple of float, the c of the check.
    check_batch_size : int, the batch of the check.
    weight_decays : tuple of float, λ of the dynamics (0 = none).
    learning_rate : float, η (plain SGD, no momentum).
    steps, batch_size : the training; record_every : int, window of the recorded curves.
    seeds : tuple of int, one training run (and one check batch) per seed.
    """

    norms: tuple[str, ...] = choices(METHODS, NORM_KINDS)
    scale_factors: tuple[float, ...] = numbers((0.1, 0.5, 2.0, 10.0), above=0)
    check_batch_size: int = integer(64, minimum=2, maximum=1347)
    weight_decays: tuple[float, ...] = numbers((0.0, 0.001, 0.003, 0.01), minimum=0)
    learning_rate: float = number(0.3, above=0)
    steps: int = integer(3000, minimum=4, why="the last quarter must hold a step")
    batch_size: int = integer(32, minimum=2, why="BatchNorm needs two samples per batch")
    record_every: int = integer(50, minimum=1)
    seeds: tuple[int, ...] = seeds(3)

    @classmethod
    def quick(cls) -> Config:
        return cls(weight_decays=(0.0, 0.03), steps=400, record_every=20)

    def validate(self) -> None:
        if self.record_every > self.steps // 4:
            raise ValueError(
                f"record_every must be ≤ steps / 4 (the last quarter is measured), got "
                f"record_every={self.record_every} and steps={self.steps}"
            )


# ---------------------------------------------------------------------------
# Run: (a) the invariance check
# ---------------------------------------------------------------------------


def _first_layer_gradient(model, x, y) -> tuple[float, np.ndarray]:
    """Loss and the gradient of the first hidden layer's parameters, flattened (weight, bias)."""
    loss, dlogits = nn.softmax_cross_entropy(model(x), y)
    model.backward(dlogits)
    layer = model[HIDDEN_LAYERS[0]]
    return loss, np.concatenate([layer.grads[name].ravel() for name in sorted(layer.params)])


def measure_check(run: dict) -> dict:
    """Cosine of θ and ∇L, and c·‖∇L(cθ)‖/‖∇L(θ)‖, for the first hidden layer (float64)."""
    rng = np.random.default_rng(run["seed"])
    split = training.digits()
    eps = CHECK_EPS[run["eps"]]
    model = nn.MLP(
        split.num_features,
        64,
        split.num_classes,
        norm=run["norm"],
        rng=rng,
        dtype=np.float64,
        norm_kwargs=None if eps is None else {"eps": eps},
    )
    batch = rng.choice(len(split.x_train), size=run["check_batch_size"], replace=False)
    x, y = split.x_train[batch].astype(np.float64), split.y_train[batch]
    model.train()
    layer = model[HIDDEN_LAYERS[0]]
    start = {name: value.copy() for name, value in layer.params.items()}
    loss, gradient = _first_layer_gradient(model, x, y)
    theta = np.concatenate([start[name].ravel() for name in sorted(start)])
    cosine = float(theta @ gradient / (np.linalg.norm(theta) * np.linalg.norm(gradient)))
    ratios, loss_changes = [], []
    for factor in run["scale_factors"]:
        for name, value in layer.params.items():
            value[...] = factor * start[name]
        scaled_loss, scaled_gradient = _first_layer_gradient(model, x, y)
        ratios.append(float(factor * np.linalg.norm(scaled_gradient) / np.linalg.norm(gradient)))
        loss_changes.append(float(abs(scaled_loss - loss)))
    return {"cosine": cosine, "gradient_ratio": ratios, "loss_change": loss_changes}


# ---------------------------------------------------------------------------
# Run: (b) the dynamics with weight decay
# ---------------------------------------------------------------------------


def measure_dynamics(run: dict) -> dict:
    """The BatchNorm MLP under plain SGD with weight decay λ: ‖W‖ and angular steps."""
    rng = np.random.default_rng(run["seed"])
    split = training.digits()
    model = nn.MLP(split.num_features, 64, split.num_classes, norm="batch", rng=rng)
    weights = [model[index].params["weight"] for index in HIDDEN_LAYERS]  # live arrays
    before = [np.array(weight, dtype=np.float64) for weight in weights]
    initial_norms = [float(np.linalg.norm(weight)) for weight in before]
    norms, angles = [], []  # per step: one value per hidden layer
    squared_steps = np.zeros(len(weights))  # Σ ‖ΔW‖², for Pythagoras at λ = 0

    def on_step(step, model, loss, x, y):
        now = [np.array(weight, dtype=np.float64) for weight in weights]
        norms.append([float(np.linalg.norm(w)) for w in now])
        step_angles = []
        for index, (old, new) in enumerate(zip(before, now, strict=True)):
            cosine = float(np.sum(old * new) / (np.linalg.norm(old) * np.linalg.norm(new)))
            step_angles.append(math.acos(min(1.0, cosine)))
            squared_steps[index] += float(np.sum((new - old) ** 2))
        angles.append(step_angles)
        before[:] = now

    numbers = training.fit(
        model,
        split,
        rng,
        batch_size=run["batch_size"],
        epochs=1,
        steps=run["steps"],
        base_lr=run["learning_rate"],
        lr_rule="constant",
        momentum=0.0,
        weight_decay=run["weight_decay"],
        on_step=on_step,
    )
    norms, angles = np.asarray(norms), np.asarray(angles)  # (steps, layers)
    window = run["record_every"]
    windows = len(angles) // window
    rms_angles = np.sqrt(
        np.mean(angles[: windows * window].reshape(windows, window, -1) ** 2, axis=1)
    )
    quarter = len(angles) // 4
    last_quarter = angles[-quarter:]
    return {
        "norm_curve": norms[window - 1 :: window][:windows].tolist(),  # (windows, layers)
        "rms_angle_curve": rms_angles.tolist(),  # (windows, layers)
        "initial_norm": initial_norms,
        "final_norm": norms[-1].tolist(),
        # mean ‖W‖ over the second half of the last quarter against its first half
        "late_norm_change": (
            norms[-(quarter // 2) :].mean(axis=0) / norms[-quarter : -(quarter // 2)].mean(axis=0)
            - 1
        ).tolist(),
        "late_rms_angle": np.sqrt(np.mean(last_quarter**2, axis=0)).tolist(),  # (layers,)
        "pythagoras_ratio": (
            (norms[-1] ** 2 - np.square(initial_norms)) / squared_steps
        ).tolist(),  # 1 when every step is orthogonal to W and λ = 0
        "test_accuracy": numbers["test_accuracy_eval"],
        "test_correct": numbers["test_correct"],
        "diverged": numbers["diverged"],
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """The invariance check for every norm and seed, then the dynamics for every λ and seed.

    Returns
    -------
    dict with
        ``config``; ``check[norm][eps]`` (eps "default" or "negligible", see
        :data:`CHECK_EPS`): per seed ``cosine`` and (seeds × scale factors)
        ``gradient_ratio`` and ``loss_change``; ``weight_decays``;
        ``dynamics[str(λ)]``: per seed ``norm_curve`` and ``rms_angle_curve`` (windows ×
        hidden layers), ``late_rms_angle``, ``initial_norm``, ``final_norm``,
        ``pythagoras_ratio``, ``test_accuracy``, ``test_correct``; ``theory_angle[str(λ)]``
        = √(2ηλ); ``equilibrated[str(λ)]``: λ > 0 and ‖W‖ settled (``late_norm_change``,
        averaged over seeds, below :data:`STATIONARY` in every layer);
        ``comparisons[str(λ)]``: paired test accuracy against λ = 0 (margin ±1 point);
        ``headline``.
    """
    checked = config.runs(norm="norms", eps=tuple(CHECK_EPS), seed="seeds").measure(
        NAME, measure_check, options
    )
    check = {
        norm: {
            eps: {
                key: checked.table(key, norm=norm, eps=eps).tolist()
                for key in ("cosine", "gradient_ratio", "loss_change")
            }
            for eps in CHECK_EPS
        }
        for norm in config.norms
    }
    trained = config.runs(weight_decay="weight_decays", seed="seeds").measure(
        NAME, measure_dynamics, options
    )
    keys = (
        "norm_curve",
        "rms_angle_curve",
        "late_norm_change",
        "late_rms_angle",
        "initial_norm",
        "final_norm",
        "pythagoras_ratio",
        "test_accuracy",
        "test_correct",
        "diverged",
    )
    dynamics, theory, equilibrated, comparisons = {}, {}, {}, {}
    eta = config.learning_rate
    for decay in config.weight_decays:
        label = f"{decay:g}"
        dynamics[label] = {key: trained.table(key, weight_decay=decay).tolist() for key in keys}
        theory[label] = math.sqrt(2 * eta * decay)
        late_change = np.mean(dynamics[label]["late_norm_change"], axis=0)  # (layers,)
        equilibrated[label] = bool(decay > 0 and np.all(np.abs(late_change) < STATIONARY))
    if 0.0 in config.weight_decays:
        for decay in config.weight_decays:
            if decay > 0:
                comparisons[f"{decay:g}"] = stats.paired_comparison(
                    dynamics[f"{decay:g}"]["test_correct"],
                    dynamics["0"]["test_correct"],
                    margin=0.01,
                ).to_dict()
    results = {
        "config": config.to_dict(),
        "norms": list(config.norms),
        "check": check,
        "weight_decays": list(config.weight_decays),
        "dynamics": dynamics,
        "theory_angle": theory,
        "equilibrated": equilibrated,
        "comparisons": comparisons,
    }
    results["headline"] = _headline(results)
    return results


def _headline(results: dict) -> dict:
    check = {}
    for norm, by_eps in results["check"].items():
        check[norm] = {
            f"{eps}_eps": {
                "max_abs_cosine": float(np.max(np.abs(entry["cosine"]))),
                "max_gradient_ratio_error": float(
                    np.max(np.abs(np.asarray(entry["gradient_ratio"]) - 1))
                ),
            }
            for eps, entry in by_eps.items()
        }
    dynamics = {}
    for label, entry in results["dynamics"].items():
        late = np.asarray(entry["late_rms_angle"])  # (seeds, layers)
        theory = results["theory_angle"][label]
        dynamics[label] = {
            "late_rms_angle_mean": float(late.mean()),
            "late_rms_angle_range": [float(late.min()), float(late.max())],
            "theory_angle": theory,
            "measured_over_theory": float(late.mean() / theory) if theory > 0 else None,
            "equilibrated": results["equilibrated"][label],
            "final_over_initial_norm": float(
                np.mean(np.asarray(entry["final_norm"]) / np.asarray(entry["initial_norm"]))
            ),
            "mean_test_accuracy_percent": 100 * float(np.mean(entry["test_accuracy"])),
        }
    headline = {"check": check, "dynamics": dynamics}
    if "0" in results["dynamics"]:
        headline["pythagoras_ratio_without_decay"] = float(
            np.mean(results["dynamics"]["0"]["pythagoras_ratio"])
        )
        curves = np.asarray(results["dynamics"]["0"]["rms_angle_curve"])  # (seeds, windows, layers)
        headline["angle_last_over_first_window_without_decay"] = float(
            np.mean(curves[:, -1, :]) / np.mean(curves[:, 0, :])
        )
    return headline


def summary(results: dict) -> str:
    """The invariance check per method, then the dynamics per weight decay against √(2ηλ)."""
    headline = results["headline"]
    lines = ["scale invariance of the first hidden layer (0 = exact), default ε | ε = 1e-12:"]
    for norm in results["norms"]:
        default, negligible = (headline["check"][norm][f"{eps}_eps"] for eps in CHECK_EPS)
        lines.append(
            f"  {norm:>6}: |cos(θ, ∇L)| {default['max_abs_cosine']:.1e} | "
            f"{negligible['max_abs_cosine']:.1e};  |c·‖∇L(cθ)‖/‖∇L(θ)‖ − 1| "
            f"{default['max_gradient_ratio_error']:.1e} | "
            f"{negligible['max_gradient_ratio_error']:.1e}"
        )
    lines.append(
        f"plain SGD, η = {results['config']['learning_rate']:g}: angular update per step "
        "(rms, last quarter) against √(2ηλ)"
    )
    for decay in results["weight_decays"]:
        label = f"{decay:g}"
        entry = headline["dynamics"][label]
        low, high = entry["late_rms_angle_range"]
        ratio = entry["measured_over_theory"]
        lines.append(
            f"  λ = {label:>6}: {entry['late_rms_angle_mean']:.4f} rad [{low:.4f}–{high:.4f}]"
            + (
                ""
                if ratio is None
                else f", √(2ηλ) = {entry['theory_angle']:.4f}, ratio {ratio:.2f}"
            )
            + (" (settled)" if entry["equilibrated"] else " (not settled)" if label != "0" else "")
            + f"; ‖W‖ final/initial {entry['final_over_initial_norm']:.2f}; "
            f"test accuracy {entry['mean_test_accuracy_percent']:.1f} %"
        )
    if "pythagoras_ratio_without_decay" in headline:
        lines.append(
            f"λ = 0: (‖W_T‖² − ‖W_0‖²) / Σ‖ΔW‖² = {headline['pythagoras_ratio_without_decay']:.6f}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


@plotting.styled
def plot(results: dict) -> Figure:
    """(a) the check; (b) ‖W‖ and (c) the angular step against steps; (d) against theory."""
    config = results["config"]
    figure, (ax_check, ax_norm, ax_angle, ax_theory) = plotting.subplots(
        1, 4, width=26.0, height=6.6
    )
    _plot_check(ax_check, results)
    decays = results["weight_decays"]
    colormap = colormaps["viridis"]
    colors = [colormap(0.85 * index / max(1, len(decays) - 1)) for index in range(len(decays))]
    window = config["record_every"]
    for decay, color in zip(decays, colors, strict=True):
        label = f"{decay:g}"
        entry = results["dynamics"][label]
        norms = np.asarray(entry["norm_curve"])[:, :, 0]  # (seeds, windows): first hidden layer
        angles = np.asarray(entry["rms_angle_curve"])[:, :, 0]
        steps = window * (np.arange(norms.shape[1]) + 1)
        name = f"λ = {label}"
        plotting.plot_spread(ax_norm, steps, norms.T, color=color, marker=None, label=name)
        plotting.plot_spread(ax_angle, steps, angles.T, color=color, marker=None, label=name)
        theory = results["theory_angle"][label]
        if theory > 0:
            ax_angle.axhline(theory, color=color, linestyle="--", linewidth=1.4)
            late = np.asarray(entry["late_rms_angle"])  # (seeds, layers)
            marker = "o" if results["equilibrated"][label] else "s"
            ax_theory.plot(
                np.full(late.size, theory),
                late.ravel(),
                marker=marker,
                linestyle="none",
                color=color,
                markersize=8,
                label=name,
            )
    ax_norm.set_yscale("log")
    ax_norm.set_xlabel("step")
    ax_norm.set_ylabel("‖W‖ of the first hidden layer")
    ax_norm.set_title("(b) the weight's norm", fontsize=15)
    ax_norm.legend(fontsize=12)
    ax_angle.set_yscale("log")
    ax_angle.set_xlabel("step")
    ax_angle.set_ylabel(f"angular step (rad), rms over {window} steps")
    ax_angle.set_title("(c) the angular step; dashed: √(2ηλ)", fontsize=15)
    positive = [results["theory_angle"][f"{d:g}"] for d in decays if d > 0]
    if positive:
        span = np.array([min(positive) / 1.5, max(positive) * 1.5])
        plotting.reference_line(ax_theory, span, span, label="measured = √(2ηλ)")
        plotting.reference_line(
            ax_theory, span, span * (1 - AGREEMENT), linestyle=":", label="±20 %"
        )
        plotting.reference_line(ax_theory, span, span * (1 + AGREEMENT), linestyle=":")
        ax_theory.set_xscale("log")
        ax_theory.set_yscale("log")
        ax_theory.legend(fontsize=11, loc="upper left")
    ax_theory.set_xlabel("√(2ηλ) (rad)")
    ax_theory.set_ylabel("measured rms angle, last quarter")
    ax_theory.set_title("(d) measured against theory", fontsize=15)
    plotting.set_title(
        figure,
        "A weight before a norm: only its direction matters, "
        "and weight decay sets how fast it turns",
        f"(a) float64 check, batch of {config['check_batch_size']}, first hidden layer, "
        f"{plotting.plural(len(config['seeds']), 'seed')}. (b–d) BatchNorm MLP, plain SGD "
        f"(no momentum), η = {config['learning_rate']:g}, B = {config['batch_size']}, "
        f"{config['steps']} steps, weight decay λ on every parameter; "
        f"{plotting.spread_caption(len(config['seeds']))}; (d) both hidden layers, every seed; "
        f"squares: ‖W‖ not settled (its mean still changing by {STATIONARY:.0%} or more "
        "within that quarter).",
    )
    return figure


def _plot_check(ax, results: dict) -> None:
    """Per norm: |cos(θ, ∇L)| and max |c·‖∇L(cθ)‖/‖∇L(θ)‖ − 1|, each ε, on a log axis."""
    floor = 1e-17  # exact zeros drawn here
    norms = results["norms"]
    offsets = {
        ("cosine", "default"): -0.3,
        ("cosine", "negligible"): -0.1,
        ("ratio", "default"): 0.1,
        ("ratio", "negligible"): 0.3,
    }
    for position, norm in enumerate(norms):
        looks = plotting.method_style(norm)
        for eps, entry in results["check"][norm].items():
            values = {
                "cosine": np.abs(entry["cosine"]),
                "ratio": np.max(np.abs(np.asarray(entry["gradient_ratio"]) - 1), axis=1),
            }
            for quantity, value in values.items():
                ax.plot(
                    np.full(len(value), position + offsets[quantity, eps]),
                    np.maximum(value, floor),
                    marker="o" if quantity == "cosine" else "D",
                    color=looks["color"],
                    markerfacecolor=looks["color"] if eps == "default" else "white",
                    linestyle="none",
                    markersize=8,
                )
    for marker, text in (("o", "|cos(θ, ∇L)|"), ("D", "max |c·‖∇L(cθ)‖ / ‖∇L(θ)‖ − 1|")):
        ax.plot([], [], marker=marker, color="#444444", linestyle="none", label=text)
    ax.plot(
        [],
        [],
        marker="s",
        color="#444444",
        linestyle="none",
        markerfacecolor="white",
        label=f"hollow: ε = {CHECK_EPS['negligible']:g}",
    )
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, 300)
    ax.set_xticks(range(len(norms)), [plotting.method_label(norm) for norm in norms], fontsize=12)
    ax.set_title("(a) scale invariance (0 = exact), layers' ε filled", fontsize=15)
    ax.legend(fontsize=11, loc="upper right")


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------


def slide_title(results: dict) -> str:
    """How the settled runs' angular steps compare with √(2ηλ), and the run without decay."""
    dynamics = results["headline"]["dynamics"]
    settled = [
        entry["measured_over_theory"]
        for entry in dynamics.values()
        if entry["equilibrated"] and entry["measured_over_theory"] is not None
    ]
    parts = []
    if settled:
        worst = max(abs(ratio - 1) for ratio in settled)
        if worst <= AGREEMENT:
            parts.append(
                "Weight decay sets how fast a weight before BatchNorm turns: within "
                f"{100 * worst:.0f} % of the prediction once settled"
            )
        else:
            parts.append(
                "Once its length settles, a weight before BatchNorm turns up to "
                f"{100 * worst:.0f} % off the predicted angle per step"
            )
    else:
        parts.append("No run's weight length settled: the predicted angle per step is not reached")
    shrink = results["headline"].get("angle_last_over_first_window_without_decay")
    if shrink is not None and shrink < 1:
        parts.append(f"without decay the turn slows {plotting.rounded(1 / shrink, 2)}×")
    return "; ".join(parts)


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: the angular step against the training step for every weight decay."""
    config = results["config"]
    decays = results["weight_decays"]
    colormap = colormaps["viridis"]
    colors = [colormap(0.85 * index / max(1, len(decays) - 1)) for index in range(len(decays))]
    figure, ax = plotting.slide_figure(
        slide_title(results),
        "plain SGD; dashed: √(2 × learning rate × weight decay); "
        f"{plotting.plural(len(config['seeds']), 'seed')}, median",
    )
    window = config["record_every"]
    for decay, color in zip(decays, colors, strict=True):
        label = f"{decay:g}"
        angles = np.asarray(results["dynamics"][label]["rms_angle_curve"])[:, :, 0]
        steps = window * (np.arange(angles.shape[1]) + 1)  # (seeds, windows): first layer
        plotting.plot_spread(ax, steps, angles.T, color=color, marker=None, label=label)
        theory = results["theory_angle"][label]
        if theory > 0:
            ax.axhline(theory, color=color, linestyle="--", linewidth=2.5)
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    plotting.plain_log_labels(ax.yaxis, minor=high / low < 100)  # 2, 3, 5 within 2 decades
    ax.set_xlabel("training step")
    ax.set_ylabel("angle the weight turns\nper step (radians)")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), title="weight decay")
    return [("turning", figure)]
