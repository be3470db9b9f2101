"""Lecture slides: 1280 × 720 at 96 dpi, every text ≥ 18 pt, one-line captions, plain words,
a PDF deck whose rendered pages are the slides, and the same bytes on every run.

The slides are drawn from the quick configs' results (the session fixture ``quick_runs``),
saved and read back the way ``python -m normlab slides`` reads ``figures/<name>.json``.
Every experiment that defines ``slides`` is checked; nothing here is specific to one.
The deck's pages are rendered by ``pdftoppm`` (Debian's poppler-utils): skipped with the
reason when it is missing, a failure in CI (``.ci/run`` installs it).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import matplotlib.text
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from normlab import experiments, plotting
from normlab.cli import DECK_NAME, main
from normlab.experiments import (
    accuracy_vs_batch_size,
    batch_coupling,
    effective_learning_rate,
    frozen_batchnorm,
    group_norm_curve,
    learning_rate_maps,
    length_drift,
    lm_batch_composition,
    lm_norms,
    loss_landscape,
    placement_gradients,
    placement_warmup,
    precise_bn,
    rms_vs_layernorm,
    running_stats,
    train_eval_gap,
    variance_numerics,
)
from normlab.experiments.framework import Experiment, load_results, save_results

REPO_ROOT = Path(__file__).resolve().parents[1]
WITH_SLIDES = [name for name in experiments.names() if experiments.get(name).has_slides]
WIDTH, HEIGHT = plotting.SLIDE_SIZE_PIXELS


def in_turn(names: list[str]) -> list[str]:
    """``names`` in the order this test process runs their quick configs.

    Under pytest-xdist every second worker goes from the other end, so two workers each run
    about half of the quick configs and read the other half from the shared cache
    (``quick_runs`` locks each experiment) instead of one waiting for the other on every one.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return names[::-1] if int(worker.removeprefix("gw")) % 2 else names


@pytest.fixture(scope="module")
def results_folder(quick_runs, tmp_path_factory) -> Path:
    """Each experiment's quick results saved as ``<name>.json``, as ``figures`` saves them."""
    folder = tmp_path_factory.mktemp("results")
    for name in in_turn(WITH_SLIDES):
        save_results(folder / f"{name}.json", quick_runs.results(name))
    return folder


@pytest.fixture(scope="module")
def drawn(results_folder) -> dict[str, list[tuple[str, Figure]]]:
    """Every experiment's slides, drawn from its saved results and rendered once."""
    slides = {}
    for name in WITH_SLIDES:
        slides[name] = experiments.get(name).slides(load_results(results_folder / f"{name}.json"))
        for _, figure in slides[name]:
            FigureCanvasAgg(figure).draw()  # lays out the texts and creates the tick labels
    return slides


def every_slide(drawn):
    return [(name, slide, figure) for name, named in drawn.items() for slide, figure in named]


def shown_texts(figure: Figure) -> list[matplotlib.text.Text]:
    """Every visible text artist with something written in it: titles, labels, ticks, legends.

    The labels of ticks outside their axis' limits are left out: they are not drawn.
    """
    undrawn = set()
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            tolerance = 1e-9 * max(abs(low), abs(high), 1e-300)
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not low - tolerance <= tick.get_loc() <= high + tolerance:
                    undrawn.update((id(tick.label1), id(tick.label2)))
    return [
        text
        for text in figure.findobj(matplotlib.text.Text)
        if text.get_visible() and text.get_text().strip() and id(text) not in undrawn
    ]


def test_the_experiments_that_no_rewrite_touches_have_slides():
    expected = {"variance_numerics", "running_stats", "rms_vs_layernorm", "batch_coupling"}
    assert expected <= set(WITH_SLIDES)


# ---------------------------------------------------------------------------
# (a) Size, fonts, captions and words of every slide
# ---------------------------------------------------------------------------


def test_every_slide_is_1280_by_720_at_96_dpi(drawn):
    for name, slide, figure in every_slide(drawn):
        assert figure.dpi == 96, f"{name}-{slide}"
        pixels = figure.get_size_inches() * figure.dpi
        assert tuple(np.round(pixels, 6)) == (WIDTH, HEIGHT), f"{name}-{slide}: {pixels}"
        assert figure.canvas.get_width_height() == (WIDTH, HEIGHT)


def test_every_text_on_every_slide_is_at_least_18_points(drawn):
    smallest = []
    for name, slide, figure in every_slide(drawn):
        texts = shown_texts(figure)
        assert len(texts) >= 4, f"{name}-{slide}: a title, axis labels and ticks at least"
        for text in texts:
            assert text.get_fontsize() >= 18, (
                f"{name}-{slide}: {text.get_text()!r} is {text.get_fontsize():g} pt"
            )
        smallest.append(min(text.get_fontsize() for text in texts))
    assert min(smallest) == plotting.SLIDE_MIN_FONT_SIZE == 18


def test_every_caption_is_one_line_and_every_title_at_most_two(drawn):
    for name, slide, figure in every_slide(drawn):
        renderer = figure.canvas.get_renderer()
        title = figure._suptitle
        assert title is not None and title.get_text(), f"{name}-{slide} states its message"
        assert title.get_text().count("\n") <= 1, f"{name}-{slide}: {title.get_text()!r}"
        assert title.get_window_extent(renderer).width <= WIDTH
        caption = figure._supxlabel
        if caption is not None and caption.get_text():
            assert "\n" not in caption.get_text(), f"{name}-{slide}: {caption.get_text()!r}"
            assert caption.get_window_extent(renderer).width <= WIDTH, f"{name}-{slide}"


def test_every_text_lies_inside_the_slide(drawn):
    for name, slide, figure in every_slide(drawn):
        renderer = figure.canvas.get_renderer()
        for text in shown_texts(figure):
            box = text.get_window_extent(renderer)
            assert box.x0 >= -1 and box.x1 <= WIDTH + 1, f"{name}-{slide}: {text.get_text()!r}"
            assert box.y0 >= -1 and box.y1 <= HEIGHT + 1, f"{name}-{slide}: {text.get_text()!r}"


#: What code looks like on a figure: identifiers with underscores, calls, keyword arguments,
#: module prefixes.
CODE = re.compile(r"_|\w\(|\w=\w|\bnl\.|\bnp\.")


def test_slides_speak_in_plain_words(drawn):
    for name, slide, figure in every_slide(drawn):
        for text in shown_texts(figure):
            words = text.get_text().replace("$", "")
            if re.fullmatch(r"\\mathdefault\{.*\}", words):  # a tick label like 10⁻⁶
                continue
            assert not CODE.search(words), f"{name}-{slide}: code on a slide: {words!r}"


# ---------------------------------------------------------------------------
# The titles say what the quick runs' own numbers show
# ---------------------------------------------------------------------------


def test_variance_slide_numbers_come_from_the_run(quick_runs):
    numbers = variance_numerics.digits_lost(quick_runs.results("variance_numerics"))
    assert numbers["ratio_without_digits"] is not None  # the one-pass form loses every digit
    assert numbers["two_pass_digits"] >= 4  # while two passes keep most of float32's ~7


def test_running_stats_title_holds_for_the_run(quick_runs):
    claims = running_stats.momentum_trade_off(quick_runs.results("running_stats"))
    assert claims == {"forgets_sooner": True, "stays_noisier": True}


def test_rms_vs_layernorm_loses_exactly_the_recentering_invariance(quick_runs):
    lost = rms_vs_layernorm.invariances_lost(quick_runs.results("rms_vs_layernorm"))
    assert lost == ["weight_matrix_recentering"]


def test_batch_coupling_titles_hold_for_the_run(quick_runs, drawn):
    results = quick_runs.results("batch_coupling")
    assert batch_coupling.batch_free_change(results) == 0  # "... outputs do not"
    typical, unusual = (
        np.mean(sample["coupling"]["batch"]["spread"][-1])
        for sample in (results["samples"][0], results["samples"][-1])
    )
    assert unusual > typical  # "an unusual sample stays coupled" at the largest batch size
    training = np.asarray(results["jacobian"]["batch_train"]["block_norms"])
    assert np.all(training[~np.eye(len(training), dtype=bool)] > 0)  # every pair of samples
    for panel in ("batch_eval", "layer"):
        assert results["jacobian"][panel]["max_off_diagonal"] == 0  # "only on its own"
    titles = [figure.get_suptitle() for _, figure in drawn["batch_coupling"]]
    assert "do not" in titles[0] and "stays coupled" in titles[1] and "only on" in titles[2]


def test_titles_of_the_quick_runs_state_what_they_show(drawn):
    titles = {
        f"{name}-{slide}": figure.get_suptitle().replace("\n", " ")
        for name, slide, figure in every_slide(drawn)
    }
    # every pair of tokens apart in LayerNorm, RMSNorm and inference BatchNorm, not in the rest
    assert titles["causal_leak-which"].endswith(
        "LayerNorm, RMSNorm and BatchNorm at inference do not"
    )
    assert "with the mask only rounding is left" in titles["padding_stats-variance"]
    assert titles["padding_stats-token_norms"].endswith("bit for bit")


def flipped(results: dict, edit) -> dict:
    """A copy of ``results`` with ``edit`` applied to it (the run itself stays as it was)."""
    results = copy.deepcopy(results)
    edit(results)
    return results


def set_pre_ln_slope(slope):
    def edit(results):
        results["headline"]["pre_ln"]["last_layer_slope_vs_depth"] = slope

    return edit


def set_text_over_images(ratio):
    def edit(results):
        results["headline"][results["positions"][0]]["fluctuation_mean_text_over_images"] = ratio

    return edit


def set_warmup_failures(failing):
    """Every run of the (placement, schedule) keys in ``failing`` fails, every other trains."""

    def edit(results):
        for entries in results["headline"].values():
            if isinstance(entries, dict):
                for key, entry in entries.items():
                    entry["failed_runs"] = entry["runs"] if key in failing else 0

    return edit


def set_drift_verdicts(verdict, drop):
    def edit(results):
        entry = results["headline"]["drifting"]
        for method in results["methods"]:
            entry[method]["drop_points"] = drop
        for pair in entry["verdict"]:
            entry["verdict"][pair] = verdict

    return edit


def set_smoothness(ratio):
    def edit(results):
        for depth in results["depths"]:
            results["headline"][f"depth_{depth}"]["none_over_batch_loss_variation"] = ratio

    return edit


def set_batchnorm_top(factor):
    """BatchNorm's stable range reaches ``factor`` × as high as no normalization's."""

    def edit(results):
        for ranges in results["stable_range"].values():
            ranges["none"] = {"low": 0.01, "high": 0.1, "decades": 1.0}
            ranges["batch"] = {"low": 0.01, "high": 0.1 * factor, "decades": 1.0}

    return edit


def set_bucketed_fluctuation(ratio):
    def edit(results):
        results["headline"]["masked_bucketed_over_random_fluctuation"] = ratio

    return edit


def set_angle_agreement(ratio):
    def edit(results):
        for entry in results["headline"]["dynamics"].values():
            if entry["measured_over_theory"] is not None:
                entry["measured_over_theory"] = ratio
                entry["equilibrated"] = True

    return edit


#: (experiment, title function, edit of its results, words the title must then contain): a
#: title says what the numbers show, so when they show the opposite, so does the title.
FLIPS = [
    ("placement_gradients", placement_gradients.slide_title, set_pre_ln_slope(-0.5), "shrinks"),
    ("placement_gradients", placement_gradients.slide_title, set_pre_ln_slope(0.0), "not shrink"),
    ("lm_norms", lm_norms.fluctuation_title, set_text_over_images(3.0), "as Shen et al. found"),
    ("lm_norms", lm_norms.fluctuation_title, set_text_over_images(1.5), "not the large gap"),
    ("lm_norms", lm_norms.fluctuation_title, set_text_over_images(0.8), "does not appear"),
    (
        "placement_warmup",
        placement_warmup.slide_title,
        set_warmup_failures({"post_ln_no_warmup"}),
        "Post-LN without warm-up fails to train",
    ),
    ("placement_warmup", placement_warmup.slide_title, set_warmup_failures(set()), "every run"),
    (
        "length_drift",
        lambda results: length_drift.slide_title(results, "drifting"),
        set_drift_verdicts("loses less", 10.0),
        "less accuracy than BatchNorm",
    ),
    (
        "length_drift",
        lambda results: length_drift.slide_title(results, "drifting"),
        set_drift_verdicts("about as much", 10.0),
        "about as much accuracy as BatchNorm",
    ),
    (
        "length_drift",
        lambda results: length_drift.slide_title(results, "drifting"),
        set_drift_verdicts("loses less", -1.0),
        "no normalization loses accuracy",
    ),
    ("loss_landscape", loss_landscape.slide_title, set_smoothness(2.0), "BatchNorm smooths"),
    ("loss_landscape", loss_landscape.slide_title, set_smoothness(0.5), "does not smooth"),
    ("learning_rate_maps", learning_rate_maps.slide_title, set_batchnorm_top(10), "trains at"),
    ("learning_rate_maps", learning_rate_maps.slide_title, set_batchnorm_top(1), "does not"),
    (
        "lm_batch_composition",
        lm_batch_composition.slide_title,
        set_bucketed_fluctuation(0.9),
        "does not make",
    ),
    (
        "effective_learning_rate",
        effective_learning_rate.slide_title,
        set_angle_agreement(1.5),
        "50 % off the predicted",
    ),
]


@pytest.mark.parametrize(
    ("name", "title_of", "edit", "words"), FLIPS, ids=[f"{flip[0]}-{flip[3]}" for flip in FLIPS]
)
def test_a_title_follows_its_numbers_when_they_flip(quick_runs, name, title_of, edit, words):
    assert words in title_of(flipped(quick_runs.results(name), edit))


def test_the_lessons_experiments_have_slides():
    expected = {
        "norm_axes",
        "batch_stat_noise",
        "accuracy_vs_batch_size",
        "statistics_batch",
        "group_norm_curve",
        "train_eval_gap",
        "precise_bn",
        "test_time_shift",
        "frozen_batchnorm",
        "batch_renorm",
    }
    assert expected <= set(WITH_SLIDES)


def test_norm_axes_title_gives_the_measured_group_sizes(quick_runs, drawn):
    headline = quick_runs.results("norm_axes")["headline"]
    title = drawn["norm_axes"][0][1].get_suptitle().replace("\n", " ")
    assert f"{headline['group_size_batch']} values in BatchNorm" in title
    assert f"{headline['group_size_instance']} in InstanceNorm" in title


def test_accuracy_and_gap_titles_quote_the_headline(quick_runs, drawn):
    results = quick_runs.results("accuracy_vs_batch_size")
    drops = accuracy_vs_batch_size.accuracy_drops(results)
    for norm, drop in drops.items():
        per_method = results["headline"]["per_method"][norm]
        assert drop == pytest.approx(per_method["drop_from_best_to_smallest_batch_points"])
    title = drawn["accuracy_vs_batch_size"][0][1].get_suptitle().replace("\n", " ")
    assert f"BatchNorm loses {drops['batch']:.0f} points" in title
    results = quick_runs.results("train_eval_gap")
    gaps = train_eval_gap.mode_gaps(results)
    quoted = results["headline"]["eval_minus_train_mode_points"]
    assert gaps == pytest.approx([quoted[str(size)] for size in results["batch_sizes"]])


def replaced(results: dict, path: tuple, value) -> dict:
    """A copy of ``results`` (:func:`flipped`) with the entry at ``path`` set to ``value``."""

    def edit(results):
        for key in path[:-1]:
            results = results[key]
        results[path[-1]] = value

    return flipped(results, edit)


def test_titles_say_what_the_verdicts_say_when_they_flip(quick_runs):
    results = quick_runs.results("group_norm_curve")
    smallest = str(results["images_per_device"][0])
    rise = ("rise_from_largest", "batch", smallest)
    for verdict, mean, words in (
        ("higher error", 4.25, "rises by 4.2 points"),
        ("lower error", -4.25, "falls by 4.2 points"),
        ("inconclusive", 0.5, "does not clearly change"),
    ):
        changed = replaced(results, rise, {"verdict": verdict, "mean": mean, "interval": [0, 1]})
        assert words in group_norm_curve._curve_title(changed)

    results = quick_runs.results("frozen_batchnorm")
    first = ("frozen_minus_train", "frozen", 0, "verdict")
    for verdict, words in (("better", "frozen BatchNorm is ahead"), ("worse", "train mode is")):
        assert words in frozen_batchnorm._frozen_title(replaced(results, first, verdict))
    neither = frozen_batchnorm._frozen_title(replaced(results, first, "inconclusive"))
    assert neither.startswith(f"Fine-tuning at batch size {results['batch_sizes'][0]}, neither")

    results = quick_runs.results("precise_bn")
    for momentum in results["bn_momenta"]:
        key = ("headline", "per_momentum", f"{momentum:g}", "precise_versus_eval_verdict")
        results = replaced(results, key, "inconclusive")
    assert "do not clearly beat" in precise_bn._gain_title(results)
    for momentum in results["bn_momenta"]:
        key = ("headline", "per_momentum", f"{momentum:g}", "precise_versus_eval_verdict")
        results = replaced(results, key, "better")
    assert "beat every running average" in precise_bn._gain_title(results)


# ---------------------------------------------------------------------------
# (b) The command and the deck's rendered pages
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written(results_folder, tmp_path_factory) -> Path:
    """``python -m normlab slides --from <results> --out <folder>``, run as a user runs it."""
    out = tmp_path_factory.mktemp("slides")
    environment = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = ["slides", "--from", str(results_folder), "--out", str(out)]
    subprocess.run(
        [sys.executable, "-m", "normlab", *command],
        check=True,
        env=environment,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def pdftoppm() -> str:
    executable = shutil.which("pdftoppm")
    if executable is None:
        message = (
            "the deck's pages are rendered with pdftoppm: apt-get install -y poppler-utils "
            "(.ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return executable


def slide_files(drawn) -> list[str]:
    """The slides' file names without suffix, in the order of the deck."""
    return [f"{name}-{slide}" for name, slide, _ in every_slide(drawn)]


def gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=float)


def thumbnail(image: np.ndarray, factor: int = 8) -> np.ndarray:
    """The mean of each ``factor`` × ``factor`` block: enough to tell the slides apart, cheaply."""
    height, width = image.shape
    return image.reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3))


def test_the_command_writes_each_slide_and_the_deck(written, drawn):
    expected = {f"{base}.png" for base in slide_files(drawn)} | {DECK_NAME}
    assert {path.name for path in written.iterdir()} == expected
    for base in slide_files(drawn):
        with Image.open(written / f"{base}.png") as image:
            assert image.size == (WIDTH, HEIGHT)
            assert np.allclose(image.info["dpi"], plotting.SLIDE_DPI, atol=0.1)


def test_the_decks_pages_are_the_slides_in_order(written, drawn, pdftoppm, tmp_path):
    subprocess.run(
        [pdftoppm, "-r", str(plotting.SLIDE_DPI), "-png", str(written / DECK_NAME), "page"],
        cwd=tmp_path,
        check=True,
    )
    pages = sorted(tmp_path.glob("page-*.png"), key=lambda path: int(path.stem.split("-")[1]))
    bases = slide_files(drawn)
    assert len(pages) == len(bases)
    slides = [thumbnail(gray(written / f"{base}.png")) for base in bases]
    for number, page_path in enumerate(pages):
        page = gray(page_path)
        assert page.shape == (HEIGHT, WIDTH), f"page {number + 1}"
        inked = np.mean(page < 250)  # share of pixels that are not (near) white
        assert inked > 0.02, f"page {number + 1} is blank ({inked:.1%} inked)"
        differences = [np.mean(np.abs(thumbnail(page) - slide)) for slide in slides]
        assert int(np.argmin(differences)) == number, (
            f"page {number + 1} looks most like {bases[int(np.argmin(differences))]}, "
            f"not {bases[number]}"
        )


def test_slides_are_drawn_without_running_anything(results_folder, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("slides must not run an experiment")

    monkeypatch.setattr(Experiment, "run", refuse)
    monkeypatch.setattr("normlab.experiments.framework.sweep", refuse)
    arguments = ["slides", "--from", str(results_folder), "--only", "variance_numerics"]
    assert main([*arguments, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "variance_numerics-digits.png").is_file()


# ---------------------------------------------------------------------------
# (c) The same bytes on every run
# ---------------------------------------------------------------------------


def test_slides_drawn_again_in_this_process_have_the_same_bytes(written, drawn, tmp_path):
    """The command's files (another process) against this process' own drawing of the slides."""
    for base, (_, _, figure) in zip(slide_files(drawn), every_slide(drawn), strict=True):
        plotting.save_figure(figure, tmp_path / base, ["png"], dpi=plotting.SLIDE_DPI)
    plotting.save_deck([figure for _, _, figure in every_slide(drawn)], tmp_path / DECK_NAME)
    names = sorted(path.name for path in written.iterdir())
    assert names == sorted(path.name for path in tmp_path.iterdir())
    for name in names:
        assert (written / name).read_bytes() == (tmp_path / name).read_bytes(), name
    deck = (written / DECK_NAME).read_bytes()
    assert b"CreationDate" not in deck and b"Matplotlib" not in deck
    for name in names:
        if name.endswith(".png"):
            png = (written / name).read_bytes()
            assert b"Software" not in png and b"Matplotlib" not in png


# ---------------------------------------------------------------------------
# Errors that say what to do
# ---------------------------------------------------------------------------


def test_a_missing_results_file_names_it_and_the_command_that_writes_it(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(["slides"]) == 2
    error = capsys.readouterr().err
    first = WITH_SLIDES[0]
    assert f"figures/{first}.json is missing" in error
    assert f"python -m normlab figures --only {first}" in error
    assert not (tmp_path / "slides").exists(), "nothing is written before every file is read"

    elsewhere = tmp_path / "mine"
    assert main(["slides", "--from", str(elsewhere), "--only", "variance_numerics"]) == 2
    error = capsys.readouterr().err
    assert f"python -m normlab figures --only variance_numerics --out {elsewhere}" in error


def test_results_from_another_version_are_a_clear_error(tmp_path, capsys, quick_runs):
    stale = dict(quick_runs.results("variance_numerics"))
    del stale["relative_error"]
    save_results(tmp_path / "variance_numerics.json", stale)
    arguments = ["slides", "--from", str(tmp_path), "--only", "variance_numerics"]
    assert main([*arguments, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "has no entry 'relative_error'" in error
    assert "rewrite it with: python -m normlab figures --only variance_numerics" in error


def test_an_experiment_without_slides_is_named_with_those_that_have_them(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.delattr(variance_numerics, "slides")
    assert main(["slides", "--only", "variance_numerics", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "variance_numerics has no slides yet; the experiments with slides are:" in error
    assert main(["slides", "--only", "varience_numerics"]) == 2
    assert "did you mean 'variance_numerics'?" in capsys.readouterr().err


def test_list_marks_the_experiments_with_slides(capsys):
    assert main(["list"]) == 0
    for line in capsys.readouterr().out.splitlines():
        name = line.split()[0]
        assert line.endswith("(slides)") == (name in WITH_SLIDES), line


# ---------------------------------------------------------------------------
# The protocol and the slide style
# ---------------------------------------------------------------------------


def fake_experiment(slides_function) -> Experiment:
    module = types.ModuleType("fake")
    if slides_function is not None:
        module.slides = slides_function
    return Experiment(name="fake", module=module)


@plotting.slide
def two_slides(names: tuple):
    figures = []
    for name in names:
        figure, ax = plotting.slide_figure("A message", "a caption")
        ax.plot([1, 2], [1, 2])
        figures.append(figure if name is None else (name, figure))
    return figures


def test_bare_figures_are_numbered_and_names_must_be_file_names():
    named = fake_experiment(lambda results: two_slides((None, None))).slides({})
    assert [name for name, _ in named] == ["1", "2"]
    assert all(isinstance(figure, Figure) for _, figure in named)
    with pytest.raises(ValueError, match="slide name 'Noise Slide' must be lower-case"):
        fake_experiment(lambda results: two_slides(("Noise Slide",))).slides({})
    with pytest.raises(ValueError, match="slide names repeat: noise"):
        fake_experiment(lambda results: two_slides(("noise", "noise"))).slides({})
    with pytest.raises(TypeError, match="must return Figures"):
        fake_experiment(lambda results: ["not a figure"]).slides({})
    without = fake_experiment(None)
    assert not without.has_slides
    with pytest.raises(TypeError, match="fake has no slides"):
        without.slides({})


@plotting.slide_style()
def test_a_caption_that_needs_two_lines_or_a_title_that_needs_three_is_refused():
    long_caption = "a caption that goes on " * 8
    with pytest.raises(ValueError, match="must fit on 1 line at 20 pt") as error:
        plotting.slide_figure("A message", long_caption)
    assert "shorten it" in str(error.value)
    with pytest.raises(ValueError, match="title must fit on 2 lines"):
        plotting.slide_figure("a message that goes on " * 12)
    figure, _ = plotting.slide_figure("a message that goes on " * 4, "one line")
    assert figure.get_suptitle().count("\n") == 1  # wrapped at a word break to two lines


@plotting.slide_style()
def test_text_width_is_the_width_the_text_is_drawn_with_on_a_slide():
    caption = "4,096 values per variance, stored in float32; 10 seeds (line: median, band: min–max)"
    figure, _ = plotting.slide_figure("A message", caption)
    FigureCanvasAgg(figure).draw()
    drawn_points = figure._supxlabel.get_window_extent().width * 72 / plotting.SLIDE_DPI
    one_pixel = 72 / plotting.SLIDE_DPI
    assert (
        abs(plotting.text_width(caption, plotting.SLIDE_CAPTION_SIZE) - drawn_points) <= one_pixel
    )
    assert plotting.text_width("batch size", 20) > plotting.text_width("batch", 20) > 0
    assert plotting.rounded(3162.27766) == "3,000"
    assert plotting.rounded(0.0875) == "0.09"
    assert plotting.rounded(0.4750217795, significant=2) == "0.48"
