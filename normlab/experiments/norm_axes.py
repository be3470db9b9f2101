"""Which entries of an (N, T, D) block share one mean and variance, for each normalization.

The question: every normalization layer computes ``(x - mean) / sqrt(var + eps)``;
they differ in *which* entries are averaged into one mean and one variance.
For a block of N samples × T tokens × D features:

* BatchNorm: one statistic per feature, over the N·T entries of that feature
  in the whole batch (so a sample's output depends on its batch-mates);
* LayerNorm: one statistic per token, over its D features;
* RMSNorm: the same groups as LayerNorm, but it does not center: the mean is
  defined as 0 and the "variance" is the mean of x²;
* GroupNorm (G groups): one statistic per sample and channel group, over the
  T·D/G entries of T tokens × D/G channels;
* InstanceNorm = GroupNorm with one channel per group (G = D): one statistic
  per sample and feature, over its T tokens.

Setup: nothing above is typed into the figure. The groups are measured from
the actual normlab layer objects with a probe: for every entry e of a random
block x, add 1 to x[e] and record which outputs change. An output changes
exactly when it was normalized with a statistic that x[e] entered, so the
changed set is e's group. The "shares a statistic" relation found this way is
checked to be a partition (symmetric and transitive) and turned into one
integer label per entry. The figure draws the block as an (N·T) × D grid,
colours the group of one highlighted entry and writes its size as a product of
the axes it spans, read off the group's own coordinates. As a second check,
the outputs of every group have mean 0 and mean square 1 for the centering
layers, while RMSNorm's outputs have mean square 1 but a non-zero mean.

Expected group sizes: N·T (BatchNorm), D (LayerNorm, RMSNorm), T·D/G
(GroupNorm), T (InstanceNorm).

What would refute this picture of the layers: a measured group of any other size, a
sharing relation that is not a partition (the probe raises), or RMSNorm outputs whose
group means are 0 (it would be centering after all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import normlab as nl
from normlab import plotting
from normlab.experiments.framework import ExperimentConfig, SweepOptions, integer, integers

NAME = "norm_axes"

#: The methods, in the order of the panels (keys of plotting.METHODS).
METHODS = ("batch", "layer", "rms", "group", "instance")

#: What is added to one entry of x to see which outputs move.
PERTURBATION = 1.0

#: An output counts as changed when it moved by more than this. Outputs outside
#: the group are computed from untouched numbers and do not move at all; inside
#: the group they move by order 0.01–1 for a perturbation of 1.
CHANGE_THRESHOLD = 1e-9

#: The names of the three axes of the block, as they appear in the formulas.
AXIS_SYMBOLS = ("N", "T", "D")


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """The block to probe. The defaults give four different group sizes (12, 8, 16, 4).

    Attributes
    ----------
    num_samples, seq_len, num_features : int
        N, T and D of the (N, T, D) block.
    num_groups : int
        G of the GroupNorm panel; must divide D. (InstanceNorm uses G = D.)
    highlight : tuple of 3 ints
        The (n, t, d) entry whose group is coloured.
    seed : int
        Seeds the random block x ~ N(1, 1) (a non-zero mean, so that RMSNorm's
        missing centering shows in the outputs).
    """

    num_samples: int = integer(3, minimum=1)
    # a statistic over one value normalizes it to exactly 0 whatever it is, so the probe
    # could not see that group (InstanceNorm over T, LayerNorm over D)
    seq_len: int = integer(4, minimum=2, why="every group must hold ≥ 2 values")
    num_features: int = integer(8, minimum=2, why="every group must hold ≥ 2 values")
    num_groups: int = integer(2, minimum=1)
    highlight: tuple[int, int, int] = integers((1, 2, 5), minimum=0, length=3, sort=False)
    seed: int = integer(0, minimum=0)

    @classmethod
    def quick(cls) -> Config:
        return cls(num_samples=2, seq_len=3, num_features=8, num_groups=2, highlight=(1, 1, 5))

    def validate(self) -> None:
        shape = (self.num_samples, self.seq_len, self.num_features)
        if self.num_features % self.num_groups:
            raise ValueError(
                f"num_groups={self.num_groups} must divide num_features={self.num_features}"
            )
        if not all(index < size for index, size in zip(self.highlight, shape, strict=True)):
            raise ValueError(
                f"highlight must be an (n, t, d) entry of the {shape} block, got {self.highlight}"
            )


# ---------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------


def sharing_matrix(layer: nl.Norm, x: np.ndarray) -> np.ndarray:
    """``shares[e, f]`` is True when perturbing entry e of ``x`` changes output f.

    One forward per entry of ``x``; returns a (x.size, x.size) boolean matrix.
    """
    baseline = layer(x)
    shares = np.zeros((x.size, x.size), dtype=bool)
    for entry in range(x.size):
        perturbed = x.copy()
        perturbed.flat[entry] += PERTURBATION
        moved = np.abs(layer(perturbed) - baseline)
        shares[entry] = moved.reshape(-1) > CHANGE_THRESHOLD
    return shares


def labels_from_sharing(shares: np.ndarray) -> np.ndarray:
    """One integer per entry (0, 1, ... in order of first appearance) from a partition.

    Raises ``RuntimeError`` if ``shares`` is not a partition (every entry in its
    own group, groups symmetric and disjoint): then the probe saw something
    other than shared statistics.
    """
    if not np.all(np.diag(shares)):
        raise RuntimeError("the probe found an entry whose own output does not move")
    if not np.array_equal(shares, shares.T):
        raise RuntimeError("the probe found a sharing relation that is not symmetric")
    labels = np.full(shares.shape[0], -1)
    next_label = 0
    for entry in range(shares.shape[0]):
        if labels[entry] >= 0:
            continue
        members = shares[entry]
        if np.any(labels[members] >= 0) or not np.all(shares[np.ix_(members, members)]):
            raise RuntimeError("the probe found overlapping groups: not a partition")
        labels[members] = next_label
        next_label += 1
    return labels


def group_extent(labels: np.ndarray, entry: tuple[int, int, int]) -> list[int]:
    """How many distinct indices along N, T and D the group of ``entry`` spans."""
    members = np.argwhere(labels == labels[entry])  # (group size, 3)
    return [len(np.unique(members[:, axis])) for axis in range(3)]


def measure_one(run: dict) -> dict:
    """Probe one method's layer on the seeded block; its labels and group statistics."""
    shape = (run["num_samples"], run["seq_len"], run["num_features"])
    x = np.random.default_rng(run["seed"]).normal(1.0, 1.0, size=shape)  # (N, T, D)
    layer = nl.make_norm(
        run["method"], run["num_features"], num_groups=run["num_groups"], dtype=np.float64
    )
    labels = labels_from_sharing(sharing_matrix(layer, x)).reshape(shape)  # (N, T, D)

    y = layer(x)
    group_sizes = np.bincount(labels.reshape(-1))  # (number of groups,)
    group_means = np.bincount(labels.reshape(-1), weights=y.reshape(-1)) / group_sizes
    group_mean_squares = np.bincount(labels.reshape(-1), weights=(y * y).reshape(-1)) / group_sizes
    return {
        "labels": labels.tolist(),
        "group_sizes": sorted(set(group_sizes.tolist())),
        "num_groups": len(group_sizes),
        "highlight_extent": group_extent(labels, tuple(run["highlight"])),
        "max_abs_group_mean_of_output": float(np.max(np.abs(group_means))),
        "min_group_mean_square_of_output": float(np.min(group_mean_squares)),
        "max_group_mean_square_of_output": float(np.max(group_mean_squares)),
    }


def run(config: Config, options: SweepOptions | None = None) -> dict:
    """Probe every method; return its labels, group sizes and the output checks.

    Returns
    -------
    dict with
        ``config``; ``shape`` = [N, T, D];
        ``methods[method]``: ``labels`` (N×T×D nested list), ``group_sizes``
        (the distinct sizes: one number when all groups are equal),
        ``num_groups``, ``highlight_extent`` (indices spanned along N, T, D),
        ``max_abs_group_mean_of_output``, ``min/max_group_mean_square_of_output``;
        ``same_groups_as_layer_norm[method]``: labels identical to LayerNorm's;
        ``headline``: the group size of each method.
    """
    runs = config.runs(method=METHODS)
    measured = dict(zip(METHODS, runs.measure(NAME, measure_one, options).results, strict=True))
    layer_labels = measured["layer"]["labels"]
    return {
        "config": config.to_dict(),
        "shape": [config.num_samples, config.seq_len, config.num_features],
        "methods": measured,
        "same_groups_as_layer_norm": {
            method: one["labels"] == layer_labels for method, one in measured.items()
        },
        "headline": {
            f"group_size_{method}": (
                one["group_sizes"][0] if len(one["group_sizes"]) == 1 else one["group_sizes"]
            )
            for method, one in measured.items()
        }
        | {"rms_max_abs_group_mean_of_output": measured["rms"]["max_abs_group_mean_of_output"]},
    }


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

_OTHER_GROUPS_COLOR = "#EEEEEE"


def size_formula(extent: list[int], shape: list[int]) -> str:
    """The group size as a product of axes, e.g. ``"N·T = 3·4 = 12"`` or ``"T·D/2 = 4·4 = 16"``.

    An axis spanned fully is written by its symbol, a part of it as ``D/k``,
    an axis the group does not span is left out.
    """
    symbols, numbers = [], []
    for symbol, spanned, size in zip(AXIS_SYMBOLS, extent, shape, strict=True):
        if spanned > 1:  # an axis of which the group holds one index adds no factor
            symbols.append(symbol if spanned == size else f"{symbol}/{size // spanned}")
            numbers.append(spanned)
    total = int(np.prod(numbers)) if numbers else 1
    if len(numbers) <= 1:
        return f"{symbols[0]} = {total}" if symbols else "1"
    return f"{'·'.join(symbols)} = {'·'.join(map(str, numbers))} = {total}"


def _draw_grid(ax, labels: np.ndarray, highlight, color: str) -> None:
    """The (N·T) × D grid: the highlighted group in ``color``, borders between groups."""
    num_samples, seq_len, num_features = labels.shape
    flat = labels.reshape(num_samples * seq_len, num_features)  # rows: (sample, token)
    highlighted = flat == labels[tuple(highlight)]
    ax.imshow(
        highlighted.astype(float),
        cmap=ListedColormap([_OTHER_GROUPS_COLOR, color]),
        vmin=0,
        vmax=1,
        aspect="auto",  # "equal" confuses the constrained layout with labels this tall
        interpolation="nearest",
    )
    rows, cols = flat.shape
    thin = {"color": "white", "linewidth": 1.0}
    border = {"color": "black", "linewidth": 2.2}
    for row in range(rows):
        for col in range(cols):
            if col + 1 < cols:  # vertical segment between (row, col) and (row, col + 1)
                style = border if flat[row, col] != flat[row, col + 1] else thin
                ax.plot([col + 0.5, col + 0.5], [row - 0.5, row + 0.5], **style)
            if row + 1 < rows:  # horizontal segment between (row, col) and (row + 1, col)
                style = border if flat[row, col] != flat[row + 1, col] else thin
                ax.plot([col - 0.5, col + 0.5], [row + 0.5, row + 0.5], **style)
    # the block's outer edge, so that every group is closed
    ax.add_patch(Rectangle((-0.5, -0.5), cols, rows, fill=False, edgecolor="black", linewidth=2.2))
    sample, token, feature = highlight
    ax.plot(feature, sample * seq_len + token, marker="*", color="black", markersize=17)
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_yticklabels([f"{row // seq_len},{row % seq_len}" for row in range(rows)], fontsize=11)
    ax.tick_params(length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


@plotting.styled
def plot(results: dict) -> Figure:
    """One (N·T) × D grid per method, the highlighted entry's group coloured."""
    config = results["config"]
    shape = results["shape"]
    num_samples, seq_len, num_features = shape
    highlight = config["highlight"]
    figure, axes = plotting.subplots(1, len(METHODS), width=20.0, height=9.2)
    for ax, method in zip(axes, METHODS, strict=True):
        measured = results["methods"][method]
        labels = np.asarray(measured["labels"])
        style = plotting.METHODS[method]
        _draw_grid(ax, labels, highlight, style.color)
        title = style.label
        if method == "rms" and results["same_groups_as_layer_norm"]["rms"]:
            title += "\n(LayerNorm's groups)"
        elif method == "group":
            title += f"\n(G={config['num_groups']})"
        elif method == "instance":
            title += f"\n(GroupNorm, G=D={num_features})"
        ax.set_title(title, color=style.color, fontweight="bold")
        largest_mean = measured["max_abs_group_mean_of_output"]
        if method == "rms":  # the statistic is the mean square; nothing is subtracted
            centering = ["no centering (mean := 0):", f"output mean per group ≤ {largest_mean:.2f}"]
        else:
            centering = ["centered:", f"output mean per group ≤ {largest_mean:.0e}"]
        lines = [
            "feature d",
            "",
            "one mean, one variance over",
            size_formula(measured["highlight_extent"], shape) + " values;",
            f"{measured['num_groups']} statistics in the block;",
            *centering,
        ]
        ax.set_xlabel("\n".join(lines), fontsize=13, linespacing=1.25)
    axes[0].set_ylabel("token (sample n, time t)")
    plotting.set_title(
        figure,
        "Which entries share one mean and variance? (coloured: the group of ★)",
        f"(N, T, D) = ({num_samples}, {seq_len}, {num_features}) block drawn as N·T rows × D "
        "columns; the groups are measured, not drawn by hand: for every entry of a random "
        "block x ~ N(1, 1), add 1 and see which outputs of the normlab layer change. "
        "Black lines: borders between groups.",
    )
    return figure
