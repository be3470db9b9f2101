"""One style for every normlab figure: fonts, colours, markers, and deterministic files.

* :data:`RC_PARAMS` and :func:`style` / :func:`styled`: large fonts that read on a
  projector, clean axes, white background. Decorate each experiment's ``plot``
  with ``@styled`` so the style holds wherever it is called (CLI or notebook).
* :data:`METHODS`: ONE colour and ONE marker per method, the same in every figure,
  from the colour-blind-safe Okabe–Ito palette (:data:`COLORS`). Use
  ``ax.plot(x, y, **method_style("batch"))``.
* :func:`subplots`, :func:`set_title`, :func:`plot_spread`, :func:`reference_line`,
  :func:`log2_axis` (batch sizes, sequence lengths), :func:`annotate`: small helpers for
  the things every figure does; :func:`spread_caption` and :func:`plural` word a caption
  after the run ("1 seed", "median of 3 seeds, band: min–max").
* :func:`save_figure`: PNG/SVG/PDF files with no date, no software version and
  stable SVG ids, so the same figure gives byte-identical files on every run.

Slides are the second variant of a figure: one message per 16:9 panel for a lecture
(``python -m normlab slides``). :data:`SLIDE_RC_PARAMS` and :func:`slide_style` /
:func:`slide` give every text at least :data:`SLIDE_MIN_FONT_SIZE` points on a
1280 × 720 slide (:data:`SLIDE_SIZE` inches at :data:`SLIDE_DPI`), thick lines and big
markers, with the same :data:`METHODS` colours as the figures; :func:`slide_figure` makes
the panel with its message as the title (at most two lines) and at most a one-line
caption (:func:`check_fits`); :func:`save_deck` writes the slides as one PDF.

An experiment gets slides by defining, next to ``plot``, a module-level ``slides``::

    @plotting.slide
    def slides(results: dict) -> list[tuple[str, Figure]]:
        figure, ax = plotting.slide_figure("BatchNorm's noise falls as 1/√(batch size)",
                                           "digits MLP, 5 seeds (line: median, band: min–max)")
        ...                                 # draw from ``results`` only, plain words only
        return [("noise", figure)]          # (file name, figure), in the order shown

It takes the saved results (``figures/<name>.json``), recomputes nothing, and words its
title from the numbers it draws. The experiment's test needs nothing more:
``tests/test_slides.py`` checks every experiment that has slides.

Figures are :class:`matplotlib.figure.Figure` objects made without pyplot, so
nothing depends on the GUI backend and no figure stays open in a global list.
(In Jupyter, a Figure returned as the last value of a cell is displayed.)
"""

from __future__ import annotations

import functools
import io
import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

from normlab._atomic import write_atomic

__all__ = [
    "COLORS",
    "DPI",
    "EXTRA_COLORS",
    "FORMATS",
    "METHODS",
    "RC_PARAMS",
    "REFERENCE_COLOR",
    "SLIDE_CAPTION_SIZE",
    "SLIDE_DPI",
    "SLIDE_MIN_FONT_SIZE",
    "SLIDE_RC_PARAMS",
    "SLIDE_SIZE",
    "SLIDE_SIZE_PIXELS",
    "VARIANTS",
    "MethodStyle",
    "VariantStyle",
    "annotate",
    "check_fits",
    "log2_axis",
    "method_label",
    "method_style",
    "plain_log_labels",
    "plot_spread",
    "plural",
    "reference_line",
    "rounded",
    "save_deck",
    "save_figure",
    "set_title",
    "slide",
    "slide_figure",
    "slide_style",
    "spread_caption",
    "style",
    "styled",
    "subplots",
    "text_width",
    "word_list",
]

#: The Okabe–Ito palette (Okabe & Ito 2008, "Color Universal Design"): eight
#: colours that stay distinct under the common forms of colour blindness.
COLORS: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",  # too light for lines on white: not given to a method
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: Colours for methods beyond the seven Okabe–Ito ones usable for lines, from Paul Tol's
#: colour-blind-safe "muted" scheme (Tol 2021, "Colour Schemes", SRON/EPS/TN/09-002).
EXTRA_COLORS: dict[str, str] = {
    "indigo": "#332288",  # a dark blue-violet, beside BatchNorm's blues
}

#: Theory curves, guides and annotations: grey, so measured data stands out.
REFERENCE_COLOR = "#666666"


@dataclass(frozen=True)
class MethodStyle:
    """How one normalization method looks in every figure."""

    label: str
    color: str
    marker: str


#: One colour and one marker per method. BatchNorm and its masked variant share
#: a hue family (blue, sky blue) so the pair reads as related.
METHODS: dict[str, MethodStyle] = {
    "none": MethodStyle("no normalization", COLORS["black"], "X"),
    "batch": MethodStyle("BatchNorm", COLORS["blue"], "o"),
    "batch_masked": MethodStyle("BatchNorm (masked)", COLORS["sky_blue"], "D"),
    "layer": MethodStyle("LayerNorm", COLORS["vermillion"], "s"),
    "rms": MethodStyle("RMSNorm", COLORS["bluish_green"], "^"),
    "group": MethodStyle("GroupNorm", COLORS["orange"], "v"),
    "instance": MethodStyle("InstanceNorm", COLORS["reddish_purple"], "P"),
    "batch_renorm": MethodStyle("Batch Renorm", EXTRA_COLORS["indigo"], "p"),
}


@dataclass(frozen=True)
class VariantStyle:
    """A variant of a method: drawn in the method's colour, told apart by marker and line."""

    method: str
    label: str
    marker: str
    linestyle: str


#: Variants of a method (where a norm sits, how it keeps its statistics): the method's colour,
#: their own marker and line style, so a figure can show them beside the plain method.
VARIANTS: dict[str, VariantStyle] = {
    "pre_ln": VariantStyle("layer", "Pre-LN", "s", "-"),
    "post_ln": VariantStyle("layer", "Post-LN", "h", "--"),
    "batch_per_step": VariantStyle("batch", "BatchNorm per time step", "d", ":"),
}

#: Resolution of saved PNGs; 8 x 5 inch figures become 1200 x 750 pixels.
DPI = 150

#: File formats :func:`save_figure` writes deterministically.
FORMATS = ("png", "svg", "pdf")

#: The colour order for lines that are not a method (yellow left out: too light on white).
_CYCLE = ("blue", "vermillion", "bluish_green", "orange", "reddish_purple", "sky_blue", "black")

RC_PARAMS: dict[str, object] = {
    # Matplotlib's bundled DejaVu Sans: the same glyphs on every machine.
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "mathtext.fontset": "dejavusans",
    # Readable from the back of a lecture room.
    "font.size": 15,
    "axes.titlesize": 16,
    "axes.labelsize": 15,
    "xtick.labelsize": 13,
    "ytick.labelsize": 13,
    "legend.fontsize": 13,
    "figure.titlesize": 17,
    "lines.linewidth": 2.2,
    "lines.markersize": 7,
    # Clean axes: no box, a faint grid.
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.8,
    "axes.prop_cycle": mpl.cycler(color=[COLORS[name] for name in _CYCLE]),
    "legend.frameon": False,
    "figure.figsize": (8.0, 5.0),
    "figure.dpi": DPI,
    "figure.facecolor": "white",
    "figure.constrained_layout.use": True,
    # Deterministic files.
    "savefig.dpi": DPI,
    "savefig.facecolor": "white",
    "svg.hashsalt": "normlab",  # SVG element ids from a fixed salt, not a random one
    "svg.fonttype": "path",  # glyphs as paths: the SVG looks the same without the font
    "pdf.fonttype": 42,  # TrueType in PDFs: text stays selectable
}

#: File metadata left out of saved figures (dates and software versions change
#: between runs and machines; None removes the entry).
_METADATA = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
}


def style():
    """A context manager (and decorator) that applies :data:`RC_PARAMS`.

    >>> with style():
    ...     figure, ax = subplots()
    """
    return mpl.rc_context(RC_PARAMS)


def styled(plot_function):
    """Decorator: run ``plot_function`` under :func:`style` (use on every ``plot``)."""
    return style()(plot_function)


def method_style(method: str) -> dict[str, str]:
    """``color``, ``marker`` and ``label`` of a method, ready for ``ax.plot(..., **style)``.

    A key of :data:`VARIANTS` gives its method's colour, its own marker and label, and a
    ``linestyle``.
    """
    if method in VARIANTS:
        variant = VARIANTS[method]
        return {
            "color": METHODS[variant.method].color,
            "marker": variant.marker,
            "label": variant.label,
            "linestyle": variant.linestyle,
        }
    try:
        entry = METHODS[method]
    except KeyError:
        raise ValueError(
            f"unknown method {method!r}; plotting.METHODS has {', '.join(METHODS)}"
            f" (and the variants {', '.join(VARIANTS)})"
        ) from None
    return {"color": entry.color, "marker": entry.marker, "label": entry.label}


def method_label(method: str) -> str:
    """The display name of a method key, e.g. ``"rms"`` → ``"RMSNorm"``."""
    return method_style(method)["label"]


def subplots(
    nrows: int = 1,
    ncols: int = 1,
    *,
    width: float | None = None,
    height: float | None = None,
    **subplot_kwargs,
) -> tuple[Figure, Axes | np.ndarray]:
    """A new styled Figure and its axes, like ``plt.subplots`` but without pyplot.

    ``width``/``height`` in inches default to 6.5 per column (8 for one) and 5
    per row. Call it inside a ``@styled`` function or ``with style():``.
    """
    if width is None:
        width = 8.0 if ncols == 1 else 6.5 * ncols
    if height is None:
        height = 5.0 * nrows
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=True, **subplot_kwargs)
    return figure, axes


def set_title(figure: Figure, question: str, setup: str | None = None) -> None:
    """Title the figure with its question, and caption it with the setup.

    The question goes on top (``suptitle``); ``setup`` — what a reader needs to
    judge the numbers, e.g. ``"digits MLP, 3 seeds (mean, min–max), lr ∝ batch
    size, equal samples seen"`` — goes underneath the axes in a smaller grey
    font (``supxlabel``; label each panel's x-axis on the panel). Both are
    wrapped to the figure width and placed by the constrained layout.
    """
    width_points = figure.get_figwidth() * 72
    title_size = mpl.rcParams["figure.titlesize"]
    figure.suptitle(_wrap(question, width_points, title_size), fontsize=title_size)
    if setup:
        caption_size = mpl.rcParams["legend.fontsize"]
        figure.supxlabel(
            _wrap(setup, width_points, caption_size), fontsize=caption_size, color="#333333"
        )


def _wrap(text: str, width_points: float, font_size) -> str:
    # An average DejaVu Sans character is about 0.55 em wide.
    characters_per_line = max(20, int(width_points / (0.55 * float(font_size))))
    return textwrap.fill(text, characters_per_line)


def plot_spread(
    ax: Axes,
    x: Sequence[float],
    samples,
    *,
    color: str,
    label: str | None = None,
    marker: str | None = "o",
    center: str = "median",
    **line_kwargs,
):
    """A line through the center of ``samples`` and a shaded band from their min to max.

    ``samples`` has shape ``(len(x), repeats)``: one row per x value, one column
    per seed. ``center`` is ``"median"`` or ``"mean"``; say which in the figure
    (:func:`spread_caption`). With one repeat there is no spread, and no band is drawn.
    Returns the line (for legends).
    """
    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 2 or samples.shape[0] != len(x):
        raise ValueError(f"samples must have shape (len(x)={len(x)}, repeats), got {samples.shape}")
    if center == "median":
        middle = np.median(samples, axis=1)
    elif center == "mean":
        middle = np.mean(samples, axis=1)
    else:
        raise ValueError(f"center must be 'median' or 'mean', got {center!r}")
    if samples.shape[1] > 1:
        ax.fill_between(x, samples.min(axis=1), samples.max(axis=1), color=color, alpha=0.2, lw=0)
    (line,) = ax.plot(x, middle, color=color, marker=marker, label=label, **line_kwargs)
    return line


def plural(count: int, noun: str) -> str:
    """``"1 seed"``, ``"3 seeds"``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


#: The phrasings of :func:`spread_caption`, for several seeds.
_SPREAD_FORMS = {
    "count_first": "{seeds} (line{sep}{center}, band{sep}min–max)",
    "count_last": "line{sep}{center}, band{sep}min–max over {seeds}",
    "center_of": "line{sep}{center} of {seeds}, band{sep}min–max",
}


def spread_caption(
    num_seeds: int, *, center: str = "median", form: str = "count_first", sep: str = ": "
) -> str:
    """How a :func:`plot_spread` figure summarizes its seeds, in words that fit the run.

    With several seeds: ``"3 seeds (line: median, band: min–max)"`` (``form="count_first"``),
    ``"line: median, band: min–max over 3 seeds"`` (``"count_last"``) or ``"line: median
    of 3 seeds, band: min–max"`` (``"center_of"``); ``sep`` is the punctuation after
    "line" and "band". With one seed there is no median and no band: ``"1 seed"``.
    """
    if form not in _SPREAD_FORMS:
        raise ValueError(f"form must be one of {tuple(_SPREAD_FORMS)}, got {form!r}")
    seeds = plural(num_seeds, "seed")
    if num_seeds == 1:
        return seeds
    return _SPREAD_FORMS[form].format(seeds=seeds, center=center, sep=sep)


def log2_axis(ax: Axes, values: Sequence[float], *, label: str | None = None) -> None:
    """The x-axis of batch sizes or lengths: log base 2, a labelled tick at every value.

    With a single value the axis spans a factor of two on each side of it, so the
    point sits in the middle of the panel and is not hidden at an edge.
    """
    values = np.asarray(values)
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [_tick_label(value) for value in values])
    ax.xaxis.set_minor_locator(NullLocator())  # the values are the ticks
    if len(np.unique(values)) == 1:
        ax.set_xlim(values[0] / 2, values[0] * 2)
    if label is not None:
        ax.set_xlabel(label)


def plain_log_labels(axis, *, minor: bool = True) -> None:
    """Plain numbers on a log axis (0.1, 0.02, 3) instead of 10⁻¹, 2×10⁻², 3×10⁰.

    Minor ticks are labelled only at 2, 3 and 5 times a power of ten, so labels do not
    crowd; ``minor=False`` labels the powers of ten only. ``axis`` is ``ax.xaxis`` or
    ``ax.yaxis``.
    """
    axis.set_major_formatter(_PLAIN)
    axis.set_minor_formatter(FuncFormatter(_label_minor_tick) if minor else NullFormatter())


_PLAIN = FuncFormatter(lambda value, _: f"{value:g}")


def _label_minor_tick(value: float, _position) -> str:
    leading_digit = round(value / 10 ** np.floor(np.log10(value)))
    return f"{value:g}" if leading_digit in (2, 3, 5) else ""


def _tick_label(value) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def reference_line(ax: Axes, x, y, *, label: str | None = None, **line_kwargs):
    """A grey dashed curve for a theory or a guide (e.g. 1/√B, float32 epsilon)."""
    kwargs = {"color": REFERENCE_COLOR, "linestyle": "--", "linewidth": 1.6, "zorder": 1.5}
    kwargs.update(line_kwargs)
    (line,) = ax.plot(x, y, label=label, **kwargs)
    return line


def annotate(
    ax: Axes,
    text: str,
    xy,
    *,
    above: float = 6,
    ha: str = "left",
    color: str = REFERENCE_COLOR,
    fontsize: float = 12,
):
    """Write ``text`` next to the data point ``xy``, ``above`` points higher (negative: below).

    For labelling a guide line (an epsilon, a floor, a theory value) at one of its ends.
    """
    return ax.annotate(
        text,
        xy=xy,
        xytext=(0, above),
        textcoords="offset points",
        ha=ha,
        color=color,
        fontsize=fontsize,
    )


def save_figure(
    figure: Figure,
    path_without_suffix: str | os.PathLike,
    formats: Sequence[str] = ("png", "svg"),
    *,
    dpi: float = DPI,
) -> list[Path]:
    """Save ``figure`` as ``<path>.png``, ``<path>.svg``, ... with deterministic bytes.

    No dates or software versions go into the files, SVG ids come from a fixed
    salt and the resolution is ``dpi`` (:data:`DPI`; slides: :data:`SLIDE_DPI`), so
    saving the same figure again, in another process, gives byte-identical files. Each
    file is written atomically (:func:`normlab._atomic.write_atomic`), so a reader never
    sees half a file. Creates the folder if needed. Returns the paths written.
    """
    base = Path(path_without_suffix)
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown:
        raise ValueError(f"unsupported format(s) {unknown}; choose from {', '.join(FORMATS)}")
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with style():
        for fmt in dict.fromkeys(formats):  # drop repeats, keep order
            path = base.with_name(f"{base.name}.{fmt}")
            buffer = io.BytesIO()
            figure.savefig(buffer, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
            write_atomic(path, buffer.getvalue())
            written.append(path)
    return written


# ---------------------------------------------------------------------------
# Slides: one message per 16:9 panel, legible from the back of a lecture room
# ---------------------------------------------------------------------------

#: A slide is 1280 × 720 pixels (16:9, the default page of presentation software) ...
SLIDE_SIZE_PIXELS = (1280, 720)

#: ... drawn at 96 dpi, so a point on the slide is a point on a 1280 × 720 screen ...
SLIDE_DPI = 96

#: ... which makes it 13.33 × 7.5 inches.
SLIDE_SIZE = (SLIDE_SIZE_PIXELS[0] / SLIDE_DPI, SLIDE_SIZE_PIXELS[1] / SLIDE_DPI)

#: No text on a slide is smaller than this many points (at 1280 × 720).
SLIDE_MIN_FONT_SIZE = 18

#: The one-line caption under a slide, in grey.
SLIDE_CAPTION_SIZE = 20

#: The title states the slide's one message, on at most two lines.
SLIDE_TITLE_SIZE = 26
SLIDE_TITLE_LINES = 2

#: The figure style (:data:`RC_PARAMS`, the same colours and fonts) at slide size:
#: every text ≥ :data:`SLIDE_MIN_FONT_SIZE`, thick lines, big markers.
SLIDE_RC_PARAMS: dict[str, object] = {
    **RC_PARAMS,
    "font.size": 22,
    "axes.titlesize": 22,
    "axes.labelsize": 22,
    "xtick.labelsize": 20,
    "ytick.labelsize": 20,
    "legend.fontsize": 20,
    "figure.titlesize": SLIDE_TITLE_SIZE,
    "lines.linewidth": 4.0,
    "lines.markersize": 13,
    "axes.linewidth": 1.6,
    "xtick.major.width": 1.6,
    "ytick.major.width": 1.6,
    "xtick.major.size": 7,
    "ytick.major.size": 7,
    "grid.linewidth": 1.0,
    "figure.figsize": SLIDE_SIZE,
    "figure.dpi": SLIDE_DPI,
    "savefig.dpi": SLIDE_DPI,
}

#: The share of the slide's width that a title or caption line may take (the
#: constrained layout keeps a small pad at each side).
_SLIDE_TEXT_WIDTH = 0.96


def slide_style():
    """A context manager (and decorator) that applies :data:`SLIDE_RC_PARAMS`."""
    return mpl.rc_context(SLIDE_RC_PARAMS)


def slide(slides_function):
    """Decorator: run an experiment's ``slides`` under :func:`slide_style`, layouts settled.

    ``slides_function`` returns a list of Figures or of (name, Figure) pairs. Each figure is
    laid out once, then its layout is fixed: the constrained layout of a panel with a colour
    bar moves by a fraction of a pixel from one drawing to the next (and with the PDF's
    72 dpi), so otherwise a slide's PNG and its page of the deck would differ, and so would
    the deck saved twice.
    """

    @functools.wraps(slides_function)
    def settled_slides(*args, **kwargs):
        with slide_style():
            named = slides_function(*args, **kwargs)
            for entry in named:
                figure = entry[1] if isinstance(entry, tuple) else entry
                if isinstance(figure, Figure):
                    figure.draw_without_rendering()
                    figure.set_layout_engine("none")  # keep the positions just computed
        return named

    return settled_slides


def text_width(text: str, font_size: float, *, dpi: float = SLIDE_DPI) -> float:
    """The width of one line of ``text`` in points, in the current font, as drawn at ``dpi``.

    Measured, not estimated: glyphs are fitted to whole pixels, so the width in points
    depends a little on the resolution (by ~2 % between 72 and 96 dpi); the default is
    the slides'. Text between a pair of ``$`` is measured as mathtext, as matplotlib draws it.
    """
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    is_math = text.count("$") >= 2 and text.count("$") % 2 == 0
    renderer = RendererAgg(1, 1, dpi)
    width, _, _ = renderer.get_text_width_height_descent(
        text, FontProperties(size=font_size), ismath=is_math
    )
    return float(width) * 72 / dpi


def check_fits(
    text: str, font_size: float, width_points: float, *, max_lines: int = 1, what: str = "caption"
) -> str:
    """``text`` wrapped at word breaks to ``width_points``; ValueError if it needs > ``max_lines``.

    The widths are measured as the text is drawn (:func:`text_width`), not estimated.
    """
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and text_width(candidate, font_size) <= width_points:
            lines[-1] = candidate
        else:
            lines.append(word)
    too_wide = any(text_width(line, font_size) > width_points for line in lines)
    if len(lines) > max_lines or too_wide:
        needed = sum(math.ceil(text_width(line, font_size) / width_points) for line in lines)
        allowed = plural(max_lines, "line")
        raise ValueError(
            f"a slide {what} must fit on {allowed} at {font_size:g} pt, but {text!r} needs "
            f"{needed} on the {width_points:.0f} pt wide slide; shorten it"
        )
    return "\n".join(lines)


def word_list(words: Sequence[str]) -> str:
    """Words joined for a title: ``"BatchNorm"``, ``"A and B"``, ``"A, B and C"``."""
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def slide_figure(
    title: str, caption: str | None = None, *, nrows: int = 1, ncols: int = 1, **subplot_kwargs
) -> tuple[Figure, Axes | np.ndarray]:
    """A 16:9 slide (:data:`SLIDE_SIZE` at :data:`SLIDE_DPI`) and its axes.

    ``title`` is the slide's one message, a sentence of plain words (wrapped to at most
    two lines); ``caption``, optional, says what a viewer needs to judge the numbers,
    in one line. Either one too long for its lines is a ValueError, so a slide can
    never carry a paragraph. Call it inside a ``@slide`` function or ``with slide_style():``.
    """
    figure = Figure(figsize=SLIDE_SIZE, dpi=SLIDE_DPI, layout="constrained")
    width = _SLIDE_TEXT_WIDTH * SLIDE_SIZE[0] * 72
    title_size = SLIDE_TITLE_SIZE
    figure.suptitle(
        check_fits(title, title_size, width, max_lines=SLIDE_TITLE_LINES, what="title"),
        fontsize=title_size,
    )
    if caption:
        figure.supxlabel(
            check_fits(caption, SLIDE_CAPTION_SIZE, width),
            fontsize=SLIDE_CAPTION_SIZE,
            color="#333333",
        )
    axes = figure.subplots(nrows, ncols, squeeze=True, **subplot_kwargs)
    return figure, axes


def rounded(value: float, significant: int = 1) -> str:
    """``value`` to ``significant`` digits for a title: 3162.3 → ``"3,000"``, 0.087 → ``"0.09"``."""
    value = float(f"{value:.{significant}g}")
    if abs(value) >= 1 and value.is_integer():
        return f"{int(value):,}"
    return f"{value:g}"


def save_deck(figures: Sequence[Figure], path: str | os.PathLike) -> Path:
    """Write ``figures`` as the pages of one PDF at ``path``, with deterministic bytes.

    One page per figure, in order, each the size of its figure (a slide: 960 × 540 pt),
    without dates or software versions; written atomically, creating the folder.
    """
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    if not figures:
        raise ValueError("a deck needs at least one slide")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with slide_style(), PdfPages(buffer, metadata=_METADATA["pdf"]) as deck:
        for figure in figures:
            deck.savefig(figure, dpi=SLIDE_DPI)
    write_atomic(path, buffer.getvalue())
    return path
