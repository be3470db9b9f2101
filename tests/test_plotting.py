"""The one style: a colour and a marker per method, and byte-identical saved files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from normlab import plotting

REPO_ROOT = Path(__file__).resolve().parents[1]

# Builds a figure with lines, a band, text, math and a legend, and saves it in every format.
SAVE_SCRIPT = """
import sys
import numpy as np
from normlab import plotting

@plotting.styled
def plot():
    figure, ax = plotting.subplots()
    x = np.arange(1, 6)
    for offset, method in enumerate(plotting.METHODS):
        ax.plot(x, x + offset, **plotting.method_style(method))
    plotting.plot_spread(ax, x, np.outer(x, [0.9, 1.0, 1.1]), color=plotting.COLORS["blue"])
    plotting.reference_line(ax, x, 1 / np.sqrt(x), label=r"theory $1/\\sqrt{B}$")
    ax.legend()
    plotting.set_title(figure, "Which method?", "setup: 3 seeds, lr ∝ batch size")
    return figure

plotting.save_figure(plot(), sys.argv[1], plotting.FORMATS)
"""


def save_in_new_process(base: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run([sys.executable, "-c", SAVE_SCRIPT, str(base)], check=True, env=env)


def test_every_method_has_its_own_colour_and_marker():
    styles = plotting.METHODS.values()
    assert len({style.color for style in styles}) == len(plotting.METHODS)
    assert len({style.marker for style in styles}) == len(plotting.METHODS)
    assert set(plotting.METHODS) == {
        "none",
        "batch",
        "batch_masked",
        "layer",
        "rms",
        "group",
        "instance",
        "batch_renorm",
    }
    palette = {*plotting.COLORS.values(), *plotting.EXTRA_COLORS.values()}  # colour-blind safe
    assert all(style.color in palette for style in styles)
    assert plotting.method_label("rms") == "RMSNorm"


def test_an_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown method 'batchnorm'"):
        plotting.method_style("batchnorm")


def test_saved_files_are_byte_identical_across_processes(tmp_path):
    save_in_new_process(tmp_path / "first" / "figure")
    save_in_new_process(tmp_path / "second" / "figure")
    for fmt in plotting.FORMATS:
        first = (tmp_path / "first" / f"figure.{fmt}").read_bytes()
        second = (tmp_path / "second" / f"figure.{fmt}").read_bytes()
        assert first == second, f"{fmt} differs between two runs"
    svg = (tmp_path / "first" / "figure.svg").read_text()
    pdf = (tmp_path / "first" / "figure.pdf").read_bytes()
    png = (tmp_path / "first" / "figure.png").read_bytes()
    assert "<dc:date>" not in svg and "Matplotlib v" not in svg
    assert b"CreationDate" not in pdf and b"Matplotlib" not in pdf
    assert b"Software" not in png and b"Matplotlib" not in png


def test_save_figure_writes_only_the_asked_formats(tmp_path):
    with plotting.style():
        figure, ax = plotting.subplots()
        ax.plot([0, 1], [0, 1])
    written = plotting.save_figure(figure, tmp_path / "f", formats=("svg", "png", "svg"))
    assert written == [tmp_path / "f.svg", tmp_path / "f.png"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["f.png", "f.svg"]
    with pytest.raises(ValueError, match="unsupported"):
        plotting.save_figure(figure, tmp_path / "f", formats=("jpg",))


def test_styled_plots_use_large_fonts_and_return_plain_figures():
    @plotting.styled
    def plot():
        figure, ax = plotting.subplots(1, 2)
        ax[0].set_xlabel("batch size")
        return figure

    figure = plot()
    assert isinstance(figure, Figure)
    assert figure.axes[0].xaxis.label.get_fontsize() >= 14
    with pytest.raises(ValueError, match="shape"):
        plotting.plot_spread(figure.axes[0], [1, 2], np.zeros(3), color="k")


# ---------------------------------------------------------------------------
# Words and axes that follow the run
# ---------------------------------------------------------------------------


def test_spread_caption_fits_the_number_of_seeds():
    assert plotting.spread_caption(3) == "3 seeds (line: median, band: min–max)"
    assert plotting.spread_caption(5, center="mean", form="count_last") == (
        "line: mean, band: min–max over 5 seeds"
    )
    assert plotting.spread_caption(3, form="center_of") == "line: median of 3 seeds, band: min–max"
    for form in ("count_first", "count_last", "center_of"):
        assert plotting.spread_caption(1, form=form) == "1 seed"
    assert plotting.plural(1, "seed") == "1 seed"
    assert plotting.plural(2, "seed") == "2 seeds"
    with pytest.raises(ValueError, match="form"):
        plotting.spread_caption(2, form="poem")


@plotting.styled
def test_one_seed_draws_a_line_and_no_band():
    _, ax = plotting.subplots()
    plotting.plot_spread(ax, [1, 2, 3], [[1.0], [2.0], [3.0]], color="black")
    assert not ax.collections  # fill_between would add a PolyCollection
    plotting.plot_spread(ax, [1, 2, 3], [[1.0, 1.5], [2.0, 2.5], [3.0, 3.5]], color="black")
    assert len(ax.collections) == 1


@plotting.styled
def test_a_single_batch_size_sits_in_the_middle_of_its_axis():
    _, ax = plotting.subplots()
    ax.plot([3], [0.5], marker="o")
    plotting.log2_axis(ax, [3], label="batch size B")
    low, high = ax.get_xlim()
    assert (low, high) == (1.5, 6.0)
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["3"]
    assert ax.get_xlabel() == "batch size B"


def test_a_variant_is_drawn_in_its_methods_colour_with_its_own_marker_and_line():
    for key, variant in plotting.VARIANTS.items():
        look = plotting.method_style(key)
        assert look["color"] == plotting.METHODS[variant.method].color
        assert look["linestyle"] == variant.linestyle
        assert key not in plotting.METHODS
    same_method = {}
    for variant in plotting.VARIANTS.values():
        same_method.setdefault(variant.method, []).append((variant.marker, variant.linestyle))
    for method, looks in same_method.items():  # told apart from each other and the method
        markers = [marker for marker, _ in looks] + [plotting.METHODS[method].marker]
        assert len(set(looks)) == len(looks) and len(set(markers)) >= len(looks)
