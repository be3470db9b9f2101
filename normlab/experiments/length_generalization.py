"""Sequence models trained on short sequences, tested on long ones, with BN, LN or RMSNorm.

The question: a model with a normalization inside each block is trained on short
sequences and then run on longer ones, as a language model is. Does the choice of
normalization decide whether it still works, and does it matter whether
BatchNorm's statistics skip the padding?

Setup: :class:`normlab.nn.SequenceModel` (two pre-norm residual blocks whose
token mixing is a mean, per-token readout), causal (each token mixes with the
mean of its prefix, the usual setting of language models) and non-causal (with
the mean of the whole sequence), on the synthetic task of
:func:`normlab.data.make_sequence_task`: each token is labelled "is this value
above the running mean of its sequence so far?".
Training batches have lengths drawn from ``train_min_len``..``train_max_len``
(8–16), right-padded to the longest (about 25 % of the positions are padding).
The test sets have one fixed length each (``seq_lens``, 8 to 128 tokens), so
they contain no padding. The metric is per-token accuracy on real tokens.
Methods, all with the same initialization, training batches and test sets for
a given seed:

* ``batch_masked``: BatchNorm whose batch and running statistics use real tokens only;
* ``batch``: BatchNorm that counts the padding zeros as data (``mask_norm=False``);
* ``layer``, ``rms``: LayerNorm and RMSNorm, which normalize each token on its own.

BatchNorm is evaluated in eval mode (running statistics), as it is deployed.
Two extra measurements explain the result:

* BatchNorm in *train* mode on the test batches (same batch size as in
  training), i.e. normalized with the batch statistics of long, unpadded sequences;
* how well the running statistics describe the real tokens of the test
  sequences: for every BatchNorm layer and feature, the real-token mean ``m``
  and variance ``v`` of its input on the test set, against the running values
  ``m_run``, ``v_run``; shown is ``sqrt(v / v_run)``, the standard deviation of
  real tokens after eval-mode normalization (1 = the running statistics fit),
  averaged over layers and features, and likewise ``|m - m_run| / sqrt(v_run)``.

What to expect, and why:

* In eval mode BatchNorm is a fixed affine map applied to each token alone, so
  neither the test length nor the test padding enters it. Its output changes
  with length only if the activations themselves drift with position.
* The unmasked BatchNorm's running statistics mix the real tokens with the
  ~25 % padding zeros of the training batches: its running variance is too
  small for real tokens (about 0.75 of theirs, if their mean is near zero). But
  the network was trained through batch statistics with exactly that mixture,
  so eval mode reproduces what training saw: a mismatch against the real
  tokens, not against training, so it should cost little.
* In train mode on unpadded test batches, the unmasked BatchNorm's statistics
  suddenly have no zeros in them: now the normalization differs from the one it
  was trained with (whatever the test length). Masked BatchNorm sees real tokens
  in both cases.
* The mixing is a mean, and the task's rule (compare with the running mean) is
  the same at every length, so a model that learned it has no reason to fail
  on long sequences; the features drift only slightly with position (the
  running mean gets less noisy as ``t`` grows).

What would refute "the normalization decides length generalization": one method losing
accuracy from the shortest to the longest test length while the others do not.
What would refute the explanation of the padding: unmasked BatchNorm's real-token
std ratio far from ``1/sqrt(1 - p)``, or masked BatchNorm's far from 1. The README
gives the numbers of the default run.

The task is kept as :func:`~normlab.data.make_sequence_task` defines it (neither
trivial nor hopeless for these models); nothing was tuned to make or remove a length
effect.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from normlab import functional, nn, plotting
from normlab.data import make_sequence_task
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    choices,
    integer,
    integers,
    number,
    seeds,
)

NAME = "length_generalization"

#: The methods this experiment knows: key of plotting.METHODS -> (norm kind, mask the norm?).
METHOD_SETUPS: dict[str, tuple[str, bool]] = {
    "batch_masked": ("batch", True),
    "batch": ("batch", False),
    "layer": ("layer", True),
    "rms": ("rms", True),
}

#: The models: key -> ``causal`` flag of :class:`normlab.nn.SequenceModel`.
MODELS: dict[str, bool] = {"causal": True, "non_causal": False}

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
    seq_lens : tuple of int
        Test lengths (each test set has one fixed length, no padding).
    seeds : tuple of int
        One initialization, training stream and test set per seed; the figure
        shows the median and the min–max band over seeds.
    methods : tuple of str
        Keys of :data:`METHOD_SETUPS`.
    train_min_len, train_max_len : int
        Training lengths are uniform in this range; batches are padded to ``train_max_len``.
    train_steps : int
        Adam steps, each on a fresh batch of ``batch_size`` sequences.
    batch_size : int
        Training batch size, also the batch size of the train-mode BatchNorm test.
    learning_rate : float
        Adam's step size, the same for every method.
    d_model, num_blocks, feature_dim : int
        Width of the residual stream, number of blocks, input features per token.
    test_sequences : int
        Sequences per test length.
    models : tuple of str
        Keys of :data:`MODELS`: ``"causal"`` (each token mixes with the mean of
        its prefix) and/or ``"non_causal"`` (with the mean of the whole sequence).
    """

    seq_lens: tuple[int, ...] = integers((8, 16, 32, 64, 128), minimum=2, why=ONE_TOKEN)
    seeds: tuple[int, ...] = seeds(3)
    methods: tuple[str, ...] = choices(("batch_masked", "batch", "layer", "rms"), METHOD_SETUPS)
    train_min_len: int = integer(8, minimum=2, why=ONE_TOKEN)
    train_max_len: int = integer(16, minimum=2, why=ONE_TOKEN)
    train_steps: int = integer(600, minimum=1)
    batch_size: int = integer(32, minimum=2, why="BatchNorm trains on batch statistics")
    learning_rate: float = number(3e-3, above=0)
    d_model: int = integer(16, minimum=1)
    num_blocks: int = integer(2, minimum=1)
    feature_dim: int = integer(4, minimum=1)
    test_sequences: int = integer(256, minimum=1)
    models: tuple[str, ...] = choices(("causal", "non_causal"), MODELS)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            seq_lens=(8, 32, 128),
            seeds=(0, 1),
            train_steps=200,
            test_sequences=96,
            models=("causal",),
        )

    def validate(self) -> None:
        if self.train_min_len > self.train_max_len:
            raise ValueError(
                "need train_min_len ≤ train_max_len, "
                f"got {self.train_min_len} and {self.train_max_len}"
            )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def build_model(run: dict) -> nn.SequenceModel:
    """The sequence model of one run, its weights drawn from the run's seed."""
    norm_kind, mask_norm = METHOD_SETUPS[run["method"]]
    return nn.SequenceModel(
        run["feature_dim"],
        run["d_model"],
        2,  # the task's two classes
        rng=np.random.default_rng((run["seed"], _INIT_STREAM)),
        norm=norm_kind,
        num_blocks=run["num_blocks"],
        causal=MODELS[run["model"]],
        mask_norm=mask_norm,
    )


def train(model: nn.SequenceModel, run: dict) -> dict:
    """Adam on fresh padded batches of short sequences; returns the last losses and padding."""
    data_rng = np.random.default_rng((run["seed"], _TRAIN_DATA_STREAM))
    optimizer = nn.Adam(model.params, model.grads, lr=run["learning_rate"])
    model.train()
    losses, padding_fractions = [], []
    for _ in range(run["train_steps"]):
        batch = make_sequence_task(
            run["batch_size"],
            run["train_min_len"],
            run["train_max_len"],
            run["feature_dim"],
            data_rng,
        )  # x (B, train_max_len, D), right-padded
        logits = model(batch.x, mask=batch.mask)  # (B, T, 2)
        loss, dlogits = nn.softmax_cross_entropy(logits, batch.y, mask=batch.mask)
        model.backward(dlogits)
        optimizer.step()
        losses.append(loss)
        padding_fractions.append(batch.padding_fraction)
    last_tenth = max(1, len(losses) // 10)
    return {
        "final_loss": float(np.mean(losses[-last_tenth:])),
        "train_padding_fraction": float(np.mean(padding_fractions)),
    }


def token_accuracy(model: nn.SequenceModel, task, batch_size: int) -> float:
    """Per-token accuracy over the real tokens of ``task``, in batches of ``batch_size``."""
    correct = 0
    for start in range(0, len(task), batch_size):
        rows = slice(start, start + batch_size)
        logits = model(task.x[rows], mask=task.mask[rows])  # (b, T, 2)
        hits = (np.argmax(logits, axis=-1) == task.y[rows]) & task.mask[rows]
        correct += int(hits.sum())
    return correct / int(task.mask.sum())


def batchnorm_inputs(model: nn.SequenceModel, x, mask) -> list[np.ndarray]:
    """The inputs of the model's norms (one per block, then the final norm), in eval mode.

    Walks the model as :meth:`SequenceModel.forward` does (embed, blocks, final norm).
    """
    inputs = []
    h = model.embed(x, mask=mask)  # (N, T, d_model)
    for block in model.blocks:
        inputs.append(h)
        h = block(h, mask=mask)
    inputs.append(h)  # the final norm's input
    return inputs


def running_statistics_fit(model: nn.SequenceModel, task) -> dict:
    """How well the BatchNorm running statistics describe the real tokens of ``task``.

    For every BatchNorm layer and feature: ``sqrt(v / v_run)`` and
    ``|m - m_run| / sqrt(v_run)``, with ``m``, ``v`` the mean and variance of
    the layer's input over the real tokens; averaged over layers and features.
    """
    norms = [block.norm for block in model.blocks] + [model.final_norm]
    inputs = batchnorm_inputs(model, task.x, task.mask)
    std_ratios, mean_offsets = [], []
    for norm, h in zip(norms, inputs, strict=True):
        mean, var, _ = functional.moments(h, (0, 1), mask=task.mask[..., None])  # (1, 1, D)
        running_std = np.sqrt(norm.running_var + norm.eps)  # (D,)
        std_ratios.append(np.sqrt(var.ravel()) / running_std)
        mean_offsets.append(np.abs(mean.ravel() - norm.running_mean) / running_std)
    return {
        "normalized_std": float(np.mean(std_ratios)),
        "normalized_mean_offset": float(np.mean(mean_offsets)),
    }


def unmasked_std_ratio_theory(padding_fraction: float) -> float:
    """``sqrt(v / v_run)`` expected for unmasked BatchNorm if the real tokens have mean ≈ 0.

    A fraction ``p`` of zeros shrinks the variance of the mixture to
    ``(1 - p) v + p (1 - p) m²``, i.e. ``(1 - p) v`` when ``m ≈ 0``.
    """
    return float(1.0 / np.sqrt(1.0 - padding_fraction))


def measure_one(run: dict) -> dict:
    """Train one (method, seed) on short sequences; test it at every length in ``run["seq_lens"]``.

    Returns, per test length: eval-mode accuracy, the majority-class rate
    (chance), and for BatchNorm the train-mode accuracy and the fit of the
    running statistics (None for LayerNorm/RMSNorm).
    """
    model = build_model(run)
    training = train(model, run)
    model.eval()
    is_batchnorm = METHOD_SETUPS[run["method"]][0] == "batch"
    per_length = {
        "eval_accuracy": [],
        "train_mode_accuracy": [],
        "chance": [],
        "normalized_std": [],
        "normalized_mean_offset": [],
    }
    for length in run["seq_lens"]:
        test_rng = np.random.default_rng((run["seed"], _TEST_DATA_STREAM, length))
        task = make_sequence_task(
            run["test_sequences"], length, length, run["feature_dim"], test_rng
        )  # (N, length, D), no padding
        per_length["eval_accuracy"].append(token_accuracy(model, task, run["batch_size"]))
        positive_rate = float(task.y[task.mask].mean())
        per_length["chance"].append(max(positive_rate, 1.0 - positive_rate))
        if is_batchnorm:
            fit = running_statistics_fit(model, task)
            per_length["normalized_std"].append(fit["normalized_std"])
            per_length["normalized_mean_offset"].append(fit["normalized_mean_offset"])
            # A copy, so that the train-mode forward passes cannot move the running statistics.
            batch_statistics_model = copy.deepcopy(model).train()
            per_length["train_mode_accuracy"].append(
                token_accuracy(batch_statistics_model, task, run["batch_size"])
            )
    if not is_batchnorm:
        for key in ("train_mode_accuracy", "normalized_std", "normalized_mean_offset"):
            per_length[key] = None
    return {**training, **per_length}


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Train and test every (model, method, seed); return plain numbers for :func:`plot` and JSON.

    Returns
    -------
    dict with
        ``config``: the config as a dict; ``seq_lens``, ``methods``: the axes;
        ``by_model[model]``, for each of ``config.models``, a dict with
            ``eval_accuracy[method]``: list over lengths of lists over seeds;
            ``train_mode_accuracy[method]``, ``normalized_std[method]``,
            ``normalized_mean_offset[method]``: the same, BatchNorm methods only;
            ``chance``: majority-class rate of the test labels (lengths × seeds);
            ``final_loss[method]``: mean training loss over the last tenth of the steps, per seed;
            ``train_padding_fraction``: share of padding in the training batches;
        ``headline``: the numbers quoted in the README.
    """
    runs = config.runs(model="models", method="methods", seed="seeds")
    measured = runs.measure(NAME, measure_one, options)

    batchnorm_methods = [method for method in config.methods if METHOD_SETUPS[method][0] == "batch"]
    by_model = {}
    for model in config.models:

        def per_seed(method: str, key: str, model: str = model) -> list:
            return measured.table(key, model=model, method=method).tolist()

        def lengths_by_seeds(method: str, key: str, model: str = model) -> list:
            return measured.table(key, model=model, method=method).T.tolist()  # (lengths, seeds)

        by_model[model] = {
            "eval_accuracy": {
                method: lengths_by_seeds(method, "eval_accuracy") for method in config.methods
            },
            **{
                key: {method: lengths_by_seeds(method, key) for method in batchnorm_methods}
                for key in ("train_mode_accuracy", "normalized_std", "normalized_mean_offset")
            },
            # The test sets depend on the seed only, so every method gives the same chance.
            "chance": lengths_by_seeds(config.methods[0], "chance"),
            "final_loss": {method: per_seed(method, "final_loss") for method in config.methods},
            "train_padding_fraction": float(
                np.mean([per_seed(method, "train_padding_fraction") for method in config.methods])
            ),
        }
    return {
        "config": config.to_dict(),
        "seq_lens": list(config.seq_lens),
        "methods": list(config.methods),
        "by_model": by_model,
        "headline": _headline(by_model),
    }


def _headline(by_model: dict) -> dict:
    def median_at(table, length_index: int) -> float:
        return float(np.median(table[length_index]))

    headline = {}
    for model, numbers in by_model.items():
        headline[f"{model}_train_padding_fraction"] = numbers["train_padding_fraction"]
        headline[f"{model}_chance_at_longest_length"] = median_at(numbers["chance"], -1)
        for method, table in numbers["eval_accuracy"].items():
            headline[f"{model}_{method}_eval_accuracy_at_shortest_length"] = median_at(table, 0)
            headline[f"{model}_{method}_eval_accuracy_at_longest_length"] = median_at(table, -1)
        for method, table in numbers["train_mode_accuracy"].items():
            headline[f"{model}_{method}_train_mode_accuracy_at_longest_length"] = median_at(
                table, -1
            )
        for method, table in numbers["normalized_std"].items():
            headline[f"{model}_{method}_running_stats_std_ratio_median"] = float(np.median(table))
        headline[f"{model}_largest_median_accuracy_drop_shortest_to_longest"] = max(
            median_at(table, 0) - median_at(table, -1)
            for table in numbers["eval_accuracy"].values()
        )  # negative: every method is better on the longest sequences
        headline[f"{model}_unmasked_std_ratio_theory"] = unmasked_std_ratio_theory(
            numbers["train_padding_fraction"]
        )
    return headline


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------


_MODEL_TITLES = {
    "causal": "causal model",
    "non_causal": "non-causal model",
}


@plotting.styled
def plot(results: dict) -> Figure:
    """One row per model, three panels against test length.

    Left: eval-mode accuracy of every method. Middle: BatchNorm with running
    statistics (solid) against the test batch's own statistics (dashed).
    Right: how well the running statistics fit the real test tokens.
    """
    config = results["config"]
    lengths = np.asarray(results["seq_lens"])
    models = list(results["by_model"])
    figure, axes = plotting.subplots(len(models), 3, width=19.0, height=5.6 * len(models) + 1.2)
    axes = np.reshape(axes, (len(models), 3))  # one row per model, also for a single model
    for row, model in enumerate(models):
        _plot_model_row(axes[row], results["by_model"][model], lengths, config, model)
        for ax in axes[row]:
            ax.set_xlabel("test sequence length (tokens)" if row == len(models) - 1 else "")

    first = results["by_model"][models[0]]
    plotting.set_title(
        figure,
        "Trained on short sequences, tested on long ones: does the normalization matter?",
        f"{config['num_blocks']} pre-norm blocks (mean mixing), trained on lengths "
        f"{config['train_min_len']}–{config['train_max_len']} (grey band; batches padded to "
        f"{config['train_max_len']}: {first['train_padding_fraction']:.0%} padding), batch "
        f"{config['batch_size']}, Adam lr {config['learning_rate']:g} for every method, "
        f"{config['train_steps']} steps; test sets of one length each, no padding, "
        f"{config['test_sequences']} sequences; {plotting.spread_caption(len(config['seeds']))}. "
        "Train mode: test batches of the training batch "
        "size normalized with their own statistics.",
    )
    return figure


def _plot_model_row(row_axes, numbers: dict, lengths, config: dict, model: str) -> None:
    ax_eval, ax_modes, ax_stats = row_axes
    model_title = _MODEL_TITLES[model]
    for ax in row_axes:
        ax.axvspan(
            config["train_min_len"], config["train_max_len"], color="#dddddd", alpha=0.6, lw=0
        )
        plotting.log2_axis(ax, lengths)

    # Left: the deployed setting, every method.
    for method, table in numbers["eval_accuracy"].items():
        look = plotting.method_style(method)
        plotting.plot_spread(
            ax_eval,
            lengths,
            np.asarray(table) * 100,
            color=look["color"],
            marker=look["marker"],
            label=look["label"],
        )
    chance = np.asarray(numbers["chance"]) * 100  # far below the zoomed axis: named in the legend
    ax_eval.plot([], [], " ", label=f"majority class: {chance.min():.0f}–{chance.max():.0f} %")
    ax_eval.set_ylabel("per-token test accuracy (%)")
    ax_eval.set_title(f"{model_title}: eval mode")
    ax_eval.legend(loc="lower right", fontsize=11)

    if not numbers["train_mode_accuracy"]:
        for ax in (ax_modes, ax_stats):
            ax.text(
                0.5, 0.5, "no BatchNorm method in this run", ha="center", transform=ax.transAxes
            )
    # Middle: BatchNorm normalized with the test batch's own statistics.
    for method, table in numbers["train_mode_accuracy"].items():
        look = plotting.method_style(method)
        common = {"color": look["color"], "marker": look["marker"]}
        plotting.plot_spread(
            ax_modes,
            lengths,
            np.asarray(numbers["eval_accuracy"][method]) * 100,
            label=f"{look['label']}, eval",
            **common,
        )
        plotting.plot_spread(
            ax_modes,
            lengths,
            np.asarray(table) * 100,
            label=f"{look['label']}, train mode",
            linestyle="--",
            markerfacecolor="white",
            **common,
        )
    # The two accuracy panels share one y-range, zoomed in on the measured accuracies.
    tables = list(numbers["eval_accuracy"].values()) + list(numbers["train_mode_accuracy"].values())
    lowest = 100 * min(np.min(table) for table in tables)
    for ax in (ax_eval, ax_modes):
        ax.set_ylim(np.floor(lowest) - 3, 100)
    ax_modes.set_ylabel("per-token test accuracy (%)")
    ax_modes.set_title(f"{model_title}: BatchNorm eval vs train mode")
    ax_modes.legend(loc="lower right", fontsize=11)

    # Right: do the running statistics describe the real test tokens?
    for method, table in numbers["normalized_std"].items():
        look = plotting.method_style(method)
        plotting.plot_spread(
            ax_stats,
            lengths,
            table,
            color=look["color"],
            marker=look["marker"],
            label=look["label"],
        )
    theory = unmasked_std_ratio_theory(numbers["train_padding_fraction"])
    plotting.reference_line(
        ax_stats,
        lengths,
        np.full(len(lengths), theory),
        label=f"1/√(1 − padding) = {theory:.2f}",
    )
    ax_stats.axhline(1.0, color=plotting.REFERENCE_COLOR, linestyle=":", linewidth=1.6)
    ax_stats.set_ylabel("real-token std / running std")
    ax_stats.set_title(f"{model_title}: BatchNorm running stats")
    ax_stats.legend(loc="best", fontsize=11)


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------

_SLIDE_MODEL_TITLES = {
    "causal": "each token sees its past",
    "non_causal": "each token sees the whole sequence",
}


def largest_accuracy_drop(results: dict) -> float:
    """The largest fall of a median accuracy (in points) from the shortest to the longest test.

    Over every model and method; negative when every method is better on the longest sequences.
    """
    return 100 * max(
        float(np.median(table[0]) - np.median(table[-1]))
        for numbers in results["by_model"].values()
        for table in numbers["eval_accuracy"].values()
    )


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: the accuracy of every method against the test length, one panel per model."""
    config = results["config"]
    lengths = np.asarray(results["seq_lens"])
    models = list(results["by_model"])
    drop = largest_accuracy_drop(results)
    trained = f"Trained on {config['train_min_len']}–{config['train_max_len']} tokens"
    if drop <= 0:
        title = (
            f"{trained}, no normalization loses accuracy on sequences of up to {lengths[-1]} tokens"
        )
    else:
        title = (
            f"{trained}, the normalizations lose at most {drop:.1f} points of accuracy on "
            f"sequences of {lengths[-1]} tokens"
        )
    figure, axes = plotting.slide_figure(
        title,
        "grey band: the training lengths; " + plotting.spread_caption(len(config["seeds"])),
        ncols=len(models),
        sharey=True,
    )
    axes = np.atleast_1d(axes)
    lowest = min(
        100 * np.min(table)
        for numbers in results["by_model"].values()
        for table in numbers["eval_accuracy"].values()
    )
    for ax, model in zip(axes, models, strict=True):
        ax.axvspan(
            config["train_min_len"], config["train_max_len"], color="#dddddd", alpha=0.6, lw=0
        )
        for method, table in results["by_model"][model]["eval_accuracy"].items():
            plotting.plot_spread(
                ax, lengths, 100 * np.asarray(table), **plotting.method_style(method)
            )
        plotting.log2_axis(ax, lengths, label="test sequence length (tokens)")
        if len(models) > 1:
            ax.set_title(_SLIDE_MODEL_TITLES[model])
    axes[0].set_ylim(5 * np.floor(lowest / 5) - 2, 100)
    axes[0].yaxis.set_major_locator(MaxNLocator(5, integer=True))
    axes[0].set_ylabel("test accuracy per token (%)")
    axes[-1].legend(loc="lower right")
    return [("accuracy", figure)]
