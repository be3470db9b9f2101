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

Images. The second row is Wu & He's (2018, "Group Normalization") Figure 2: an image
block (N, H, W, C) drawn as a cube with N across, C in depth and the H·W positions
stacked upwards, for BatchNorm (per channel, over N·H·W), LayerNorm as the paper defines
it on feature maps (per image, over C·H·W: ``GroupNorm`` with one group), InstanceNorm
(per image and channel, over H·W) and GroupNorm (per image, over H·W and C/G channels),
plus normlab's channels-last ``LayerNorm(C)``, which the CNN's ``norm="layer"`` uses:
per image *and position*, over C only, a different layer from the paper's LayerNorm. The
same probe measures the groups on a random (N, H, W, C) block; the cube colours the group
of the entry (sample 0, channel 0, the top position) on its three visible faces.
Expected: N·H·W, C·H·W, H·W, H·W·C/G and C.

What would refute this picture of the layers: a measured group of any other size (on
either block), a sharing relation that is not a partition (the probe raises), or RMSNorm
outputs whose group means are 0 (it would be centering after all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import normlab as nl
from normlab import plotting
from normlab.experiments.framework import (
    ExperimentConfig,
    SweepOptions,
    integer,
    integers,
    measure_together,
)

NAME = "norm_axes"

#: The methods, in the order of the panels (keys of plotting.METHODS).
METHODS = ("batch", "layer", "rms", "group", "instance")

#: What is added to one entry of x to see which outputs move.
PERTURBATION = 1.0

#: An output counts as changed when it moved by more than this. Outputs outside
#: the group are computed from untouched numbers and do not move at all; inside
#: the group they move by order 0.01–1 for a perturbation of 1.
CHANGE_THRESHOLD = 1e-9

#: A group whose outputs average more than this in absolute value was not centered (the
#: centering layers give ~1e-16; RMSNorm on x ~ N(1, 1) gives order 1).
CENTERED_MEAN = 1e-6

#: The names of the three axes of the block, as they appear in the formulas.
AXIS_SYMBOLS = ("N", "T", "D")

#: The axes of the image cube as Wu & He draw them: (N, C, H·W).
CUBE_AXIS_SYMBOLS = ("N", "C", "H·W")

#: The panels of the image cube: key -> (kind of make_norm, its options, the style key
#: in plotting.METHODS, the title). LayerNorm is the paper's (GroupNorm with one group).
IMAGE_METHODS = {
    "batch": ("batch", {}, "batch", "BatchNorm"),
    "layer": ("group", {"num_groups": 1}, "layer", "LayerNorm\n(Wu & He: over C, H, W)"),
    "instance": ("instance", {}, "instance", "InstanceNorm"),
    "group": ("group", None, "group", "GroupNorm"),
    "layer_channels": ("layer", {}, "layer", "normlab LayerNorm(C)\n(per position)"),
}


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
    image_shape : tuple of 4 ints
        (N, H, W, C) of the image block of the cubes.
    image_num_groups : int
        G of the GroupNorm cube; must divide C.
    """

    num_samples: int = integer(3, minimum=1)
    # a statistic over one value normalizes it to exactly 0 whatever it is, so the probe
    # could not see that group (InstanceNorm over T, LayerNorm over D)
    seq_len: int = integer(4, minimum=2, why="every group must hold ≥ 2 values")
    num_features: int = integer(8, minimum=2, why="every group must hold ≥ 2 values")
    num_groups: int = integer(2, minimum=1)
    highlight: tuple[int, int, int] = integers((1, 2, 5), minimum=0, length=3, sort=False)
    seed: int = integer(0, minimum=0)
    # two positions and two channels at least: a statistic over one value cannot be seen
    image_shape: tuple[int, int, int, int] = integers((4, 2, 2, 6), minimum=1, length=4, sort=False)
    image_num_groups: int = integer(3, minimum=1)

    @classmethod
    def quick(cls) -> Config:
        return cls(
            num_samples=2,
            seq_len=3,
            num_features=8,
            num_groups=2,
            highlight=(1, 1, 5),
            image_shape=(2, 2, 2, 4),
            image_num_groups=2,
        )

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
        _, height, width, channels = self.image_shape
        if height * width < 2 or channels < 2:
            raise ValueError(
                "image_shape needs at least 2 positions (H·W) and 2 channels (C), so that "
                f"every statistic of the cube holds ≥ 2 values, got {self.image_shape}"
            )
        if channels % self.image_num_groups:
            raise ValueError(
                f"image_num_groups={self.image_num_groups} must divide the {channels} "
                f"channels of image_shape {self.image_shape}"
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
    """One panel: a method on the (N, T, D) block (``block="sequence"``) or on the cube."""
    if run["block"] == "image":
        return measure_image(run)
    return measure_sequence(run)


def measure_sequence(run: dict) -> dict:
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


def image_layer(method: str, channels: int, num_groups: int) -> nl.Norm:
    """The float64 layer of one cube panel (see :data:`IMAGE_METHODS`)."""
    kind, options, _, _ = IMAGE_METHODS[method]
    options = {"num_groups": num_groups} if options is None else options
    return nl.make_norm(kind, channels, dtype=np.float64, **options)


def measure_image(run: dict) -> dict:
    """Probe one cube panel's layer on a seeded (N, H, W, C) block; labels as (N, C, H·W)."""
    samples, height, width, channels = run["image_shape"]
    x = np.random.default_rng(run["seed"]).normal(1.0, 1.0, size=run["image_shape"])
    layer = image_layer(run["method"], channels, run["image_num_groups"])
    labels = labels_from_sharing(sharing_matrix(layer, x)).reshape(x.shape)  # (N, H, W, C)
    cube = np.moveaxis(labels, -1, 1).reshape(samples, channels, height * width)  # (N, C, H·W)
    sizes = np.bincount(cube.reshape(-1))
    return {
        "labels": cube.tolist(),
        "group_sizes": sorted(set(sizes.tolist())),
        "num_groups": len(sizes),
        "highlight_extent": group_extent(cube, (0, 0, 0)),
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
        ``image_shape`` = [N, H, W, C]; ``image_methods[method]`` for the cube panels
        (:data:`IMAGE_METHODS`): ``labels`` (N×C×H·W nested list), ``group_sizes``,
        ``num_groups``, ``highlight_extent`` (along N, C, H·W) of entry (0, 0, 0);
        ``headline``: the group size of each method (``image_`` for the cubes).
    """
    sequence_part, image_part = measure_together(
        NAME,
        measure_one,
        [
            config.runs(block=("sequence",), method=METHODS),
            config.runs(block=("image",), method=tuple(IMAGE_METHODS)),
        ],
        options,
    )
    measured = dict(zip(METHODS, sequence_part.results, strict=True))
    images = dict(zip(IMAGE_METHODS, image_part.results, strict=True))
    layer_labels = measured["layer"]["labels"]
    return {
        "config": config.to_dict(),
        "shape": [config.num_samples, config.seq_len, config.num_features],
        "methods": measured,
        "same_groups_as_layer_norm": {
            method: one["labels"] == layer_labels for method, one in measured.items()
        },
        "image_shape": list(config.image_shape),
        "image_methods": images,
        "headline": {
            f"group_size_{method}": _one_size(one["group_sizes"])
            for method, one in measured.items()
        }
        | {
            f"group_size_image_{method}": _one_size(one["group_sizes"])
            for method, one in images.items()
        }
        | {"rms_max_abs_group_mean_of_output": measured["rms"]["max_abs_group_mean_of_output"]},
    }


def _one_size(group_sizes: list[int]):
    """The group size when every group has it, else the list of sizes."""
    return group_sizes[0] if len(group_sizes) == 1 else group_sizes


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

_OTHER_GROUPS_COLOR = "#EEEEEE"


def size_formula(extent: list[int], shape: list[int], symbols_of_axes=AXIS_SYMBOLS) -> str:
    """The group size as a product of axes, e.g. ``"N·T = 3·4 = 12"`` or ``"T·D/2 = 4·4 = 16"``.

    An axis spanned fully is written by its symbol, a part of it as ``D/k``,
    an axis the group does not span is left out. ``symbols_of_axes`` names the axes
    (the cube's are :data:`CUBE_AXIS_SYMBOLS`).
    """
    symbols, numbers = [], []
    for symbol, spanned, size in zip(symbols_of_axes, extent, shape, strict=True):
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


#: The cube's oblique projection: one step along C moves a cell this far (right, up).
_DEPTH_STEP = (0.42, 0.3)


def _draw_cube(ax, labels: np.ndarray, color: str) -> None:
    """An (N, C, H·W) block as a cube, Wu & He's Figure 2: N across, C in depth, H·W up.

    The three visible faces are drawn cell by cell: the front (channel 0), the top (the
    first position) and the right side (the last sample). A cell is coloured when its
    entry shares a statistic with entry (0, 0, 0).
    """
    samples, channels, positions = labels.shape
    target = labels[0, 0, 0]
    dx, dy = _DEPTH_STEP
    faces, colours = [], []

    def add(corners, entry) -> None:
        faces.append(corners)
        colours.append(color if labels[entry] == target else _OTHER_GROUPS_COLOR)

    for n in range(samples):  # front face, channel 0; position 0 at the top
        for p in range(positions):
            low, high = positions - 1 - p, positions - p
            add([(n, low), (n + 1, low), (n + 1, high), (n, high)], (n, 0, p))
    for n in range(samples):  # top face, position 0
        for c in range(channels):
            add(
                [
                    (n + c * dx, positions + c * dy),
                    (n + 1 + c * dx, positions + c * dy),
                    (n + 1 + (c + 1) * dx, positions + (c + 1) * dy),
                    (n + (c + 1) * dx, positions + (c + 1) * dy),
                ],
                (n, c, 0),
            )
    for c in range(channels):  # right face, the last sample
        for p in range(positions):
            low, high = positions - 1 - p, positions - p
            add(
                [
                    (samples + c * dx, low + c * dy),
                    (samples + (c + 1) * dx, low + (c + 1) * dy),
                    (samples + (c + 1) * dx, high + (c + 1) * dy),
                    (samples + c * dx, high + c * dy),
                ],
                (samples - 1, c, p),
            )
    ax.add_collection(PolyCollection(faces, facecolors=colours, edgecolors="black", linewidths=1.0))
    ax.text(samples / 2, -0.35, "N", ha="center", va="top", fontsize=14)
    ax.text(-0.25, positions / 2, "H·W", ha="right", va="center", fontsize=14)
    ax.text(
        samples + channels * dx + 0.15, positions + channels * dy, "C", va="center", fontsize=14
    )
    ax.set_xlim(-1.3, samples + channels * dx + 0.9)
    ax.set_ylim(-1.2, positions + channels * dy + 0.6)
    ax.set_aspect("equal")
    ax.axis("off")


@plotting.styled
def plot(results: dict) -> Figure:
    """Top: one (N·T) × D grid per method. Bottom: Wu & He's image cube per method."""
    config = results["config"]
    shape = results["shape"]
    num_samples, seq_len, num_features = shape
    highlight = config["highlight"]
    figure, all_axes = plotting.subplots(
        2,
        len(METHODS),
        width=20.0,
        height=15.0,
        gridspec_kw={"height_ratios": [9.2, 5.8]},
    )
    axes, cube_axes = all_axes
    image_shape = results["image_shape"]
    cube_shape = [image_shape[0], image_shape[3], image_shape[1] * image_shape[2]]
    for ax, (method, one) in zip(cube_axes, results["image_methods"].items(), strict=True):
        _, _, style_key, title = IMAGE_METHODS[method]
        color = plotting.METHODS[style_key].color
        _draw_cube(ax, np.asarray(one["labels"]), color)
        if method == "group":
            title += f" (G={config['image_num_groups']})"
        ax.set_title(title, color=color, fontweight="bold", fontsize=15)
        ax.text(
            0.5,
            0.0,
            "over " + size_formula(one["highlight_extent"], cube_shape, CUBE_AXIS_SYMBOLS),
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=13,
        )
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
        f"Top: (N, T, D) = ({num_samples}, {seq_len}, {num_features}) block drawn as N·T rows "
        "× D columns, black lines: borders between groups. Bottom: an (N, H, W, C) = "
        f"{tuple(image_shape)} image block as Wu & He's cube (N across, C in depth, H·W up), "
        "the group of sample 0, channel 0, the top position. The groups are measured, not "
        "drawn by hand: for every entry of a random block x ~ N(1, 1), add 1 and see which "
        "outputs of the normlab layer change.",
    )
    return figure


# ---------------------------------------------------------------------------
# Slides
# ---------------------------------------------------------------------------


def _sizes_in_words(sizes: dict[str, int]) -> str:
    """``"12 values in BatchNorm, 8 in LayerNorm and RMSNorm, ..."``: equal sizes together."""
    phrases, methods = [], list(sizes)
    while methods:
        size = sizes[methods[0]]
        same = [method for method in methods if sizes[method] == size]
        unit = "" if phrases else " values"
        names = plotting.word_list([plotting.method_label(method) for method in same])
        phrases.append(f"{size}{unit} in {names}")
        methods = [method for method in methods if sizes[method] != size]
    return plotting.word_list(phrases)


@plotting.slide
def slides(results: dict) -> list[tuple[str, Figure]]:
    """One slide: the group of one entry in each layer, and how many values it holds."""
    shape = results["shape"]
    num_samples, seq_len, num_features = shape
    sizes = {
        method: int(np.prod(results["methods"][method]["highlight_extent"])) for method in METHODS
    }
    figure, axes = plotting.slide_figure(
        f"One mean and variance per group of {_sizes_in_words(sizes)}",
        f"rows: {num_samples} samples × {seq_len} tokens, columns: {num_features} features; "
        "coloured: ★'s group",
        ncols=len(METHODS),
    )
    for ax, method in zip(axes, METHODS, strict=True):
        measured = results["methods"][method]
        style = plotting.METHODS[method]
        _draw_grid(ax, np.asarray(measured["labels"]), results["config"]["highlight"], style.color)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(style.label, color=style.color, fontweight="bold")
        label = plotting.plural(sizes[method], "value")
        if measured["max_abs_group_mean_of_output"] > CENTERED_MEAN:
            label += "\nmean not removed"
        ax.set_xlabel(label)
    axes[0].set_ylabel("sample, token")
    return [("groups", figure)]
