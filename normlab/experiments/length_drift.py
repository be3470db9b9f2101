"""Train short, test long, with activations that drift: per-position accuracy beyond T.

The question: a sequence model trained on sequences of ``train_len`` tokens is run on
sequences several times longer. Does the normalization decide whether it still works? The
popular answer: "LayerNorm is better for long sequences, because it normalizes each time
step on its own". Ba et al. (2016, "Layer Normalization", §3.1) put it this way for
recurrent networks: BatchNorm there needs statistics for each time step, and a test
sequence longer than any training sequence has time steps without any; Cooijmans et al.
(2016, "Recurrent Batch Normalization") keep per-time-step statistics and reuse those of
the last trained step beyond it.

``length_generalization`` asks the same question of a model whose activations barely change
with position, trained on padded batches of varying length: nothing can break there. This
experiment makes the test one that can fail.

Setup: :class:`normlab.nn.SequenceModel` (two pre-norm residual blocks whose token mixing
is the running mean of the prefix, a norm before a per-token readout; causal) on the task of
:func:`normlab.data.make_sequence_task` (each token labelled "is its value above the
running mean of its sequence so far?"). Trained with Adam on fresh batches of sequences of
exactly ``train_len`` tokens (no padding), then tested, in eval mode, on sequences of
``test_len`` tokens. The model is causal and every norm acts on each token alone in eval
mode, so the accuracy at position t is that of a token after t others, whatever follows:
it is reported in doubling bins of positions, [0, T), [T, 2T), [2T, 4T), ... with T =
``train_len``. Two models:

* ``stationary``: the task's inputs as they are. The statistics of the activations barely
  change with position (the running mean only gets less noisy).
* ``drifting``: the same with one more input feature, the position itself, t / T. Its
  value grows without bound, so the statistics of every activation that it reaches drift
  with position: beyond T they leave the range seen in training. (An absolute position
  signal is what many sequence models are given.)

Methods, with the same initialization, batches and test sets for a seed:

* ``batch``: BatchNorm with statistics pooled over the batch and every position (as in
  every other experiment here); in eval mode one fixed affine map per feature;
* ``batch_per_step``: BatchNorm with statistics for each position
  (``BatchNorm(max_positions=train_len)``); in eval mode position t ≥ T reuses the
  statistics of position T − 1;
* ``layer``, ``rms``: LayerNorm and RMSNorm, which normalize each token by its own
  features.

Also measured, to see the drift: at each test position, the root mean square of the
first norm's input (over sequences and features), relative to its mean over the trained
positions.

What the claim predicts, stated before the run: on the stationary model no method loses
accuracy beyond T; on the drifting model both BatchNorms lose accuracy beyond T (their
statistics are fixed at training values) while LayerNorm and RMSNorm keep it. What would
refute the claim: on the drifting model, LayerNorm or RMSNorm losing as much accuracy from
the trained positions to the longest bin as a BatchNorm, that is, not less in every seed
than the BatchNorm in any seed (:func:`compare_drops`; the headline's ``verdict``).
Why it might: a per-token norm removes a token's scale, not its direction; the position
feature adds a growing vector to every token, which LayerNorm and RMSNorm divide back to a
fixed length, so everything else in the token shrinks against it. The README gives the
numbers of the default run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from normlab import data, nn, plotting, stats
from normlab.data import make_sequence_task
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    choices,
    integer,
    number,
    seeds,
)

NAME = "length_drift"

#: The methods: key of plotting.METHODS -> norm kind (per-step BatchNorm: max_positions set).
METHOD_SETUPS: dict[str, str] = {
    "batch": "batch",
    "batch_per_step": "batch",
    "layer": "layer",
    "rms": "rms",
}

#: The models: key -> whether the position t / train_len is an input feature.
MODELS: dict[str, bool] = {"stationary": False, "drifting": True}

#: Why every length is ≥ 2: the first token's label is always 0 (it is its own running mean).
ONE_TOKEN = "the label of a sequence's first token is always 0"

#: Random streams derived from a seed, so that every method of a seed gets the
#: same initial weights, the same training batches and the same test sets.
_INIT_STREAM, _TRAIN_DATA_STREAM, _TEST_DATA_STREAM = 0, 1, 2


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """What to train and test. The defaults are the full figure; ``Config.quick()`` a small one.

    Attributes
    ----------
    train_len : int
        The length of every training sequence (T).
    test_len : int
        The length of the test sequences (≥ T); positions are binned by doubling from T.
    seeds : tuple of int
        One initialization, training stream and test set per seed.
    methods : tuple of str
        Keys of :data:`METHOD_SETUPS`.
    models : tuple of str
        Keys of :data:`MODELS`.
    train_steps : int
        Adam steps, each on a fresh batch of ``batch_size`` sequences.
    batch_size : int
        Training batch size.
    learning_rate : float
        Adam's step size, the same for every method.
    d_model, num_blocks, feature_dim : int
        Width of the residual stream, number of blocks, input features of the task.
    test_sequences : int
        Sequences in the test set.
    """

    train_len: int = integer(16, minimum=2, why=ONE_TOKEN)
    test_len: int = integer(128, minimum=2, why=ONE_TOKEN)
    seeds: tuple[int, ...] = seeds(2)
    methods: tuple[str, ...] = choices(("batch", "batch_per_step", "layer", "rms"), METHOD_SETUPS)
    models: tuple[str, ...] = choices(("stationary", "drifting"), MODELS)
    train_steps: int = integer(500, minimum=1)
    batch_size: int = integer(32, minimum=2, why="BatchNorm trains on batch statistics")
    learning_rate: float = number(3e-3, above=0)
    d_model: int = integer(16, minimum=1)
    num_blocks: int = integer(2, minimum=1)
    feature_dim: int = integer(4, minimum=1)
    test_sequences: int = integer(256, minimum=1)

    @classmethod
    def quick(cls) -> Config:
        return cls(test_len=64, train_steps=150, test_sequences=64, methods=("batch", "layer"))

    def validate(self) -> None:
        if self.test_len < self.train_len:
            raise ValueError(f"test_len must be ≥ train_len={self.train_len}, got {self.test_len}")


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def with_position_feature(x: np.ndarray, train_len: int) -> np.ndarray:
    """``x`` (N, T, D) with one more feature, the position t / ``train_len``: (N, T, D + 1)."""
    clock = (np.arange(x.shape[1], dtype=x.dtype) / x.dtype.type(train_len))[None, :, None]
    return np.concatenate([x, np.broadcast_to(clock, (*x.shape[:2], 1))], axis=-1)


def inputs_of(run: dict, x: np.ndarray) -> np.ndarray:
    """What the model of ``run`` sees: the task's features, and for ``drifting`` the position."""
    return with_position_feature(x, run["train_len"]) if MODELS[run["model"]] else x


def build_model(run: dict) -> nn.SequenceModel:
    """The sequence model of one run, its weights drawn from the run's seed."""
    options = {"max_positions": run["train_len"]} if run["method"] == "batch_per_step" else {}
    return nn.SequenceModel(
        run["feature_dim"] + MODELS[run["model"]],
        run["d_model"],
        2,  # the task's two classes
        rng=np.random.default_rng((run["seed"], _INIT_STREAM)),
        norm=METHOD_SETUPS[run["method"]],
        num_blocks=run["num_blocks"],
        causal=True,
        norm_kwargs=options,
    )


def train(model: nn.SequenceModel, run: dict) -> float:
    """Adam on fresh batches of ``train_len`` tokens; the mean loss over the last tenth."""
    data_rng = np.random.default_rng((run["seed"], _TRAIN_DATA_STREAM))
    optimizer = nn.Adam(model.params, model.grads, lr=run["learning_rate"])
    model.train()
    losses = []
    length = run["train_len"]
    for _ in range(run["train_steps"]):
        batch = make_sequence_task(run["batch_size"], length, length, run["feature_dim"], data_rng)
        logits = model(inputs_of(run, batch.x))  # (B, T, 2)
        loss, dlogits = nn.softmax_cross_entropy(logits, batch.y)
        model.backward(dlogits)
        optimizer.step()
        losses.append(loss)
    return float(np.mean(losses[-max(1, len(losses) // 10) :]))


def accuracy_by_position(model: nn.SequenceModel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Eval-mode per-token accuracy at each position over the sequences of ``x``: (T,)."""
    model.eval()
    predictions = np.argmax(model(x), axis=-1)  # (N, T)
    return (predictions == y).mean(axis=0)


def first_norm_input_rms(model: nn.SequenceModel, x: np.ndarray) -> np.ndarray:
    """Root mean square of the first block's norm input at each position: (T,)."""
    h = model.embed(x).astype(np.float64)  # (N, T, d_model), the first norm's input
    return np.sqrt(np.mean(h**2, axis=(0, 2)))


def measure_one(run: dict) -> dict:
    """Train one (model, method, seed) on ``train_len``; accuracy at every test position."""
    model = build_model(run)
    final_loss = train(model, run)
    test_rng = np.random.default_rng((run["seed"], _TEST_DATA_STREAM))
    length = run["test_len"]
    task = make_sequence_task(run["test_sequences"], length, length, run["feature_dim"], test_rng)
    x = inputs_of(run, task.x)  # (N, test_len, D or D + 1)
    accuracy = accuracy_by_position(model, x, task.y)
    rms = first_norm_input_rms(model, x)
    positive_rate = task.y[:, 1:].mean(axis=0)  # (T - 1,), position 0 is always 0
    bins = data.position_bins(run["train_len"], length)
    return {
        "final_loss": final_loss,
        "accuracy_by_bin": [float(accuracy[start:stop].mean()) for start, stop in bins],
        "norm_input_rms_by_bin": [float(rms[start:stop].mean()) for start, stop in bins],
        "majority_class": float(np.maximum(positive_rate, 1 - positive_rate).mean()),
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Train and test every (model, method, seed); return plain numbers for :func:`plot`.

    Returns
    -------
    dict with
        ``config``; ``methods``; ``models``; ``position_bins``: [start, stop) pairs;
        ``by_model[model]``: ``accuracy[method]`` and ``norm_input_rms[method]``, each a
        list over bins of lists over seeds; ``final_loss[method]`` (per seed);
        ``majority_class``: the majority-class rate of the test labels (per seed);
        ``headline``.
    """
    runs = config.runs(model="models", method="methods", seed="seeds")
    measured = runs.measure(NAME, measure_one, options)
    by_model = {}
    for model in config.models:

        def bins_by_seeds(method: str, key: str, model: str = model) -> list:
            return measured.table(key, model=model, method=method).T.tolist()  # (bins, seeds)

        by_model[model] = {
            "accuracy": {m: bins_by_seeds(m, "accuracy_by_bin") for m in config.methods},
            "norm_input_rms": {
                m: bins_by_seeds(m, "norm_input_rms_by_bin") for m in config.methods
            },
            "final_loss": {
                m: measured.table("final_loss", model=model, method=m).tolist()
                for m in config.methods
            },
            "majority_class": measured.table(
                "majority_class", model=model, method=config.methods[0]
            ).tolist(),
        }
    results = {
        "config": config.to_dict(),
        "methods": list(config.methods),
        "models": list(config.models),
        "position_bins": [list(b) for b in data.position_bins(config.train_len, config.test_len)],
        "by_model": by_model,
    }
    results["headline"] = _headline(results)
    return results


def compare_drops(token_norm, batchnorm) -> str:
    """How a per-token norm's accuracy drops compare with a BatchNorm's, seed by seed.

    ``"loses less"`` if all of its drops are below all of the BatchNorm's, ``"loses more"``
    if all are above, else ``"about as much"`` (:func:`normlab.stats.range_order`).
    """
    order = stats.range_order(token_norm, batchnorm)
    return {"below": "loses less", "above": "loses more"}.get(order, "about as much")


def _headline(results: dict) -> dict:
    config = results["config"]
    headline = {"train_len": config["train_len"], "test_len": config["test_len"]}
    for model, numbers in results["by_model"].items():
        entry = {}
        drops = {}
        for method, table in numbers["accuracy"].items():
            trained, longest = np.median(table[0]), np.median(table[-1])
            drops[method] = 100 * np.subtract(table[0], table[-1])  # (seeds,)
            entry[method] = {
                "accuracy_in_trained_positions_percent": 100 * float(trained),
                "accuracy_in_longest_bin_percent": 100 * float(longest),
                "drop_points": 100 * float(trained - longest),
                "drop_points_per_seed": drops[method].tolist(),
            }
        entry["verdict"] = {
            f"{token}_vs_{batch}": compare_drops(drops[token], drops[batch])
            for token in ("layer", "rms")
            for batch in ("batch", "batch_per_step")
            if token in drops and batch in drops
        }
        rms = {m: np.median(t, axis=1) for m, t in numbers["norm_input_rms"].items()}  # (bins,)
        entry["first_norm_input_rms_growth_to_longest_bin"] = {
            m: float(values[-1] / values[0]) for m, values in rms.items()
        }
        entry["majority_class_percent"] = 100 * float(np.median(numbers["majority_class"]))
        headline[model] = entry
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


_MODEL_TITLES = {
    "stationary": "stationary inputs",
    "drifting": "with the position t / T as an input (drifting)",
}


@plotting.styled
def plot(results: dict) -> Figure:
    """One row per model: accuracy per position bin, and the drift of the first norm's input."""
    config = results["config"]
    models = results["models"]
    bins = results["position_bins"]
    centers = np.asarray([np.sqrt(max(start, 1) * stop) for start, stop in bins])
    labels = [f"{start}–{stop - 1}" for start, stop in bins]
    figure, axes = plotting.subplots(len(models), 2, width=15.0, height=5.4 * len(models) + 1.0)
    axes = np.reshape(axes, (len(models), 2))
    lowest = min(
        np.min(table)
        for model in models
        for table in results["by_model"][model]["accuracy"].values()
    )
    for row, model in enumerate(models):
        numbers = results["by_model"][model]
        ax_accuracy, ax_drift = axes[row]
        for method in results["methods"]:
            look = plotting.method_style(method)
            plotting.plot_spread(
                ax_accuracy, centers, 100 * np.asarray(numbers["accuracy"][method]), **look
            )
            rms = np.asarray(numbers["norm_input_rms"][method])  # (bins, seeds)
            plotting.plot_spread(ax_drift, centers, rms / rms[:1], **look)
        majority = 100 * float(np.median(numbers["majority_class"]))
        ax_accuracy.plot([], [], " ", label=f"majority class: {majority:.0f} %")
        ax_accuracy.set_ylim(max(0.0, np.floor(100 * lowest) - 5), 100)
        ax_accuracy.set_ylabel("per-token test accuracy (%)")
        ax_accuracy.set_title(f"{_MODEL_TITLES[model]}: accuracy", loc="left", fontsize=14)
        ax_accuracy.legend(loc="lower left", fontsize=11)
        ax_drift.set_yscale("log")
        plotting.plain_log_labels(ax_drift.yaxis)
        ax_drift.set_ylabel("RMS of the first norm's input\n(relative to trained positions)")
        ax_drift.set_title(f"{_MODEL_TITLES[model]}: drift", loc="left", fontsize=14)
        for ax in (ax_accuracy, ax_drift):
            ax.axvspan(centers[0] / 2, bins[0][1], color="#dddddd", alpha=0.6, lw=0)
            ax.set_xscale("log", base=2)
            ax.set_xticks(centers, labels, fontsize=11)
            ax.minorticks_off()
            ax.set_xlabel("test position t" if row == len(models) - 1 else "")
    plotting.set_title(
        figure,
        "Trained on short sequences, run on long ones: which normalization keeps working?",
        f"{config['num_blocks']} pre-norm blocks (causal running-mean mixing), d_model "
        f"{config['d_model']}, trained on sequences of {config['train_len']} tokens (grey), "
        f"batch {config['batch_size']}, Adam lr {config['learning_rate']:g} for every method, "
        f"{config['train_steps']} steps; tested in eval mode on {config['test_sequences']} "
        f"sequences of {config['test_len']} tokens, accuracy averaged over the positions of "
        f"each bin; {plotting.spread_caption(len(config['seeds']))}. Per-step BatchNorm reuses "
        f"the statistics of position {config['train_len'] - 1} beyond it.",
    )
    return figure


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def summary(results: dict) -> str:
    """Accuracy per position bin of every model and method, and the verdicts, from ``results``."""
    bins = results["position_bins"]
    lines = []
    for model in results["models"]:
        entry = results["headline"][model]
        lines.append(
            f"{_MODEL_TITLES[model]}: accuracy (%) at positions "
            + ", ".join(f"{start}–{stop - 1}" for start, stop in bins)
            + f" (median over seeds; majority class {entry['majority_class_percent']:.0f} %)"
        )
        for method in results["methods"]:
            medians = 100 * np.median(results["by_model"][model]["accuracy"][method], axis=1)
            lines.append(
                f"  {plotting.method_label(method):24s}"
                + "".join(f"{value:7.1f}" for value in medians)
                + f"   drop {entry[method]['drop_points']:+.1f} points"
            )
        for pair, verdict in entry.get("verdict", {}).items():
            token, batch = pair.split("_vs_")
            wording = {"about as much": "loses about as much as"}.get(verdict, f"{verdict} than")
            lines.append(
                f"  {plotting.method_label(token)} {wording} {plotting.method_label(batch)} "
                "(seed by seed)"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

_SLIDE_INPUTS = {"stationary": "stationary inputs", "drifting": "drifting inputs"}

#: A verdict of :func:`compare_drops`, as the end of a sentence about accuracy (one subject).
_SLIDE_VERDICTS = {
    "loses less": "loses less accuracy than",
    "loses more": "loses more accuracy than",
    "about as much": "loses about as much accuracy as",
}


def slide_title(results: dict, model: str) -> str:
    """What the accuracy beyond the trained length shows for ``model``, in words."""
    entry = results["headline"][model]
    train_len = results["config"]["train_len"]
    methods = results["methods"]
    start = f"Past the {train_len} trained tokens, on {_SLIDE_INPUTS[model]},"
    if all(entry[method]["drop_points"] <= 0 for method in methods):
        return f"{start} no normalization loses accuracy"
    verdicts = {
        token: entry["verdict"][f"{token}_vs_batch"]
        for token in ("layer", "rms")
        if f"{token}_vs_batch" in entry["verdict"]
    }
    drop = f"BatchNorm ({entry['batch']['drop_points']:.0f} points)"
    if len(set(verdicts.values())) == 1 and len(verdicts) == 2:
        verdict = _SLIDE_VERDICTS[verdicts["layer"]].replace("loses", "lose", 1)
        return f"{start} LayerNorm and RMSNorm {verdict} {drop}"
    if verdicts:
        token, verdict = next(iter(verdicts.items()))
        return f"{start} {plotting.method_label(token)} {_SLIDE_VERDICTS[verdict]} {drop}"
    return f"{start} the accuracy of each normalization"


def _accuracy_slide(results: dict, model: str) -> Figure:
    config = results["config"]
    bins = results["position_bins"]
    centers = np.arange(len(bins))  # one step per doubling bin
    numbers = results["by_model"][model]
    figure, ax = plotting.slide_figure(
        slide_title(results, model),
        f"trained on {config['train_len']} tokens (grey), tested on {config['test_len']}; "
        + plotting.spread_caption(len(config["seeds"])),
    )
    for method in results["methods"]:
        accuracy = 100 * np.asarray(numbers["accuracy"][method])  # (bins, seeds)
        plotting.plot_spread(ax, centers, accuracy, **plotting.method_style(method))
    lowest = min(100 * np.min(table) for table in numbers["accuracy"].values())
    ax.set_ylim(max(0.0, 10 * np.floor(lowest / 10) - 5), 100)
    ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.axvspan(-0.5, 0.5, color="#dddddd", alpha=0.6, lw=0)  # the first bin: the trained positions
    ax.set_xticks(centers, [f"{start}–{stop - 1}" for start, stop in bins])
    ax.set_xlim(-0.5, len(bins) - 0.6)
    ax.set_xlabel("position in the test sequence")
    ax.set_ylabel("test accuracy per token (%)")
    ax.legend(loc="lower left")
    return figure


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide per model: the accuracy at each position of the long test sequences."""
    return [(model, _accuracy_slide(results, model)) for model in results["models"]]
