"""Every notebook runs top to bottom in quick mode, and renders as a handout in a browser.

The lessons (``notebooks/*.ipynb``) and their solutions (``notebooks/solutions/``) are
each executed once per test session (the ``executed`` fixture), in quick mode; the
tests of a notebook's outputs and of its handout share that one run. The handouts are
the executed notebooks as HTML (:func:`normlab.handouts.to_html`, what ``make
handouts`` writes), loaded in one headless Chromium for all of them: each must show
every figure the notebook made, decoded, with a non-zero size, and no error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import session_folder

from normlab import handouts
from normlab.experiments.framework import CACHE_ENVIRONMENT_VARIABLE

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

LESSONS = handouts.lessons()
SOLUTIONS = handouts.solutions()
NOTEBOOKS = LESSONS + SOLUTIONS
WRITE_IT_YOURSELF = handouts.lesson_path("09_write_it_yourself")
WRITE_IT_YOURSELF_SOLUTIONS = handouts.SOLUTIONS_DIR / "09_write_it_yourself_solutions.ipynb"


def notebook_id(path: Path) -> str:
    return path.stem


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """``executed(path)``: the notebook run once in quick mode (its exception, if it failed).

    The kernels share one run cache (``NORMLAB_CACHE``, a folder of the test session that
    every xdist worker sees): a run that a lesson computed is read back by its solutions,
    not recomputed, as a student's rerun with ``NORMLAB_CACHE`` set would be.
    """
    cache = session_folder(tmp_path_factory, "notebook-runs")
    runs: dict[Path, object] = {}

    def run(path: Path):
        if path not in runs:
            try:
                with pytest.MonkeyPatch.context() as patch:
                    patch.setenv(CACHE_ENVIRONMENT_VARIABLE, str(cache))
                    runs[path] = handouts.execute(
                        path, quick=True, timeout=handouts.QUICK_CELL_TIMEOUT_SECONDS
                    )
            except Exception as error:  # kept, so that a failing notebook is not run twice
                runs[path] = error
        if isinstance(runs[path], Exception):
            raise runs[path]
        return runs[path]

    return run


def code_outputs(notebook):
    return [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]


def figures_in(notebook) -> int:
    return sum("image/png" in output.get("data", {}) for output in code_outputs(notebook))


def tagged(notebook, tag: str):
    return [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]


def report_headline(cell) -> str:
    """The first line of the report a check cell displays."""
    (output,) = cell.outputs
    return output["data"]["text/plain"].splitlines()[0]


# ---------------------------------------------------------------------------
# The lessons and solutions, as committed and as run
# ---------------------------------------------------------------------------


def test_there_are_at_least_six_lessons():
    assert len(LESSONS) >= 6, [path.name for path in LESSONS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_is_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {index} has stored outputs"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_notebook_runs_top_to_bottom_in_quick_mode(path, executed):
    notebook = executed(path)  # raises CellExecutionError, naming the cell, if any cell fails
    errors = [output for output in code_outputs(notebook) if output.get("output_type") == "error"]
    assert not errors
    if path in LESSONS:
        assert figures_in(notebook) >= 1, f"{path.name} shows no figure inline"


def test_write_it_yourself_stubs_run_and_every_check_says_not_implemented_yet(executed):
    notebook = executed(WRITE_IT_YOURSELF)
    stubs, checks = tagged(notebook, "exercise"), tagged(notebook, "check")
    assert len(stubs) == len(checks) == 6
    for stub in stubs:
        assert "raise NotImplementedError" in stub.source
    for check in checks:
        assert report_headline(check).endswith(")")
        assert ": not implemented yet (" in report_headline(check), report_headline(check)


def test_write_it_yourself_solutions_pass_every_check(executed):
    checks = tagged(executed(WRITE_IT_YOURSELF_SOLUTIONS), "check")
    lesson_checks = tagged(nbformat.read(WRITE_IT_YOURSELF, as_version=4), "check")
    assert [cell.source for cell in checks] == [cell.source for cell in lesson_checks]
    for check in checks:
        assert report_headline(check).endswith(": passed"), report_headline(check)


def exercise_numbers(notebook) -> list[int]:
    """The exercise numbers of a notebook: ``## Exercise K`` headings, or the numbered items
    (``**1.`` or ``1. **``) of its ``## Exercises`` section."""
    numbers, in_exercises = [], False
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            heading = re.match(r"##\s+Exercise\s+(\d+)\b", line)
            if heading:
                numbers.append(int(heading.group(1)))
            elif line.startswith("## "):
                in_exercises = line.strip() == "## Exercises"
            elif in_exercises:
                item = re.match(r"\s*(?:\*\*)?(\d+)\.\s+(?:\*\*)?\S", line)
                if item:
                    numbers.append(int(item.group(1)))
    return numbers


def lesson_of(solution: Path) -> Path:
    return handouts.NOTEBOOK_DIR / f"{solution.stem.removesuffix('_solutions')}.ipynb"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=notebook_id)
def test_solutions_answer_every_exercise_of_their_lesson_in_order(solution):
    lesson = lesson_of(solution)
    assert lesson.exists(), f"{solution.name} has no lesson {lesson.name}"
    asked = exercise_numbers(nbformat.read(lesson, as_version=4))
    answered = exercise_numbers(nbformat.read(solution, as_version=4))
    assert asked, f"{lesson.name} has no exercises"
    assert answered == asked


@pytest.mark.parametrize("solution", SOLUTIONS, ids=notebook_id)
def test_solutions_take_the_lessons_own_setup(solution):
    source = "\n".join(
        cell.source
        for cell in nbformat.read(solution, as_version=4).cells
        if cell.cell_type == "code"
    )
    for name in re.findall(r"lesson_setup\(\"([^\"]+)\"\)", source):
        assert handouts.lesson_path(name) == lesson_of(solution)


def test_every_lesson_has_solutions():
    lessons_answered = {lesson_of(solution).stem[:2] for solution in SOLUTIONS}
    assert {"01", "02", "03", "04", "05", "06", "07", "08", "09"} <= lessons_answered


#: Lessons whose code cells each show one idea: long formatting lives in library functions.
SHORT_CELL_LESSONS = ("06_common_claims_tested", "08_training_dynamics")


@pytest.mark.parametrize("name", SHORT_CELL_LESSONS)
def test_every_code_cell_of_the_claims_lessons_fits_in_20_lines(name):
    notebook = nbformat.read(handouts.lesson_path(name), as_version=4)
    lengths = [len(cell.source.splitlines()) for cell in notebook.cells if cell.cell_type == "code"]
    assert max(lengths) <= 20, lengths


# ---------------------------------------------------------------------------
# Handouts: the executed notebooks as HTML, in a real browser
# ---------------------------------------------------------------------------

#: Waits until every image is decoded (or failed), then describes the images and the errors.
PAGE_PROBE = """
Promise.all([...document.images].map(image => image.decode().catch(() => null))).then(() => ({
  title: (document.querySelector("h1") || {textContent: ""}).textContent.replace("¶", "").trim(),
  images: [...document.images].map(image => ({
    data: image.src.startsWith("data:image/png;base64,"),
    complete: image.complete,
    naturalWidth: image.naturalWidth,
    naturalHeight: image.naturalHeight,
    width: image.getBoundingClientRect().width,
    height: image.getBoundingClientRect().height,
    visible: getComputedStyle(image).visibility === "visible",
  })),
  errors: [...document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(element => element.textContent)
    .filter(text => text.includes("Traceback") || text.includes("Error")),
  cells: document.querySelectorAll(".jp-Cell").length,
}))
"""


@pytest.fixture(scope="session")
def browser():
    from browser import HeadlessChromium, find_chromium

    executable = find_chromium()
    if executable is None:
        if Path("/etc/debian_version").exists():
            reason = "Chromium is not installed: apt-get install -y chromium (.ci/run does)"
        else:
            reason = "no Chromium on PATH (chromium, chromium-browser or google-chrome)"
        message = f"the handouts are checked in a headless browser; {reason}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with HeadlessChromium(executable) as running:
        yield running


@pytest.fixture(scope="session")
def handout_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("handouts")


def assert_renders_with_every_figure(page: dict, notebook, title: str):
    assert page["title"] == title.replace("`", "")  # the heading's markdown, rendered
    assert page["cells"] == len(notebook.cells)
    assert not page["errors"], page["errors"]
    assert len(page["images"]) == figures_in(notebook)
    for image in page["images"]:
        assert image["data"] and image["complete"] and image["visible"], image
        assert image["naturalWidth"] > 0 and image["naturalHeight"] > 0, image
        assert image["width"] > 0 and image["height"] > 0, image


@pytest.mark.parametrize("path", NOTEBOOKS, ids=notebook_id)
def test_handout_renders_in_chromium_with_its_figures_and_no_error(
    path, executed, browser, handout_dir
):
    notebook = executed(path)
    page_path = handout_dir / f"{path.stem}.html"
    page_path.write_text(handouts.to_html(notebook), encoding="utf-8")
    page = browser.inspect(page_path.as_uri(), PAGE_PROBE)
    assert_renders_with_every_figure(page, notebook, handouts.title_of(notebook, path.stem))


def test_the_browser_check_sees_a_broken_figure(browser, tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<h1>A page</h1><img src="data:image/png;base64,iVBORw0KGgoAAAAbroken">',
        encoding="utf-8",
    )
    (image,) = browser.inspect(broken.as_uri(), PAGE_PROBE)["images"]
    assert image["data"] and image["naturalWidth"] == 0


def test_make_handouts_writes_a_page_per_notebook_and_an_index(request, tmp_path):
    small = nbformat.v4.new_notebook()
    small.cells = [
        nbformat.v4.new_markdown_cell("# A small lesson"),
        nbformat.v4.new_code_cell(
            "%matplotlib inline\n"
            "from normlab import plotting\n"
            "with plotting.style():\n"
            "    figure, ax = plotting.subplots()\n"
            "    ax.plot([0, 1], [1, 0])\n"
            "figure"
        ),
    ]
    small.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    source = tmp_path / "00_small.ipynb"
    nbformat.write(small, source)
    out = tmp_path / "handouts"
    pages = handouts.write_handouts(out, quick=True, paths=[source])
    assert [page.name for page in pages] == ["00_small.html", "index.html"]
    browser = request.getfixturevalue("browser")  # skips here when there is no Chromium
    page = browser.inspect(pages[0].as_uri(), PAGE_PROBE)
    assert page["title"] == "A small lesson"
    assert len(page["images"]) == 1 and page["images"][0]["naturalWidth"] > 0
    links = browser.inspect(
        pages[1].as_uri(), "[...document.links].map(link => [link.textContent, link.href])"
    )
    assert links == [["A small lesson", pages[0].as_uri()]]


def test_a_relative_run_cache_reaches_the_kernel_as_the_callers_folder(tmp_path, monkeypatch):
    # the kernel starts in the notebook's folder, so "figures/.cache" must not move there
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CACHE_ENVIRONMENT_VARIABLE, "figures/.cache")
    environment = handouts._kernel_environment(quick=False)
    assert environment[CACHE_ENVIRONMENT_VARIABLE] == str(tmp_path.resolve() / "figures" / ".cache")
