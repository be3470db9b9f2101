"""Handouts: every notebook executed, as one HTML page with its figures inline.

``make handouts`` (``python -m normlab.handouts``) runs every lesson in ``notebooks/``
and every solutions notebook in ``notebooks/solutions/`` top to bottom, each in a
fresh kernel, and writes ``handouts/<notebook>.html`` and an ``index.html``: the
text, the code, what it printed and its figures (PNG, inside the page as ``data:``
URIs), to read in any browser, on a phone or on paper, without Jupyter. The
formulas are typeset by MathJax, which the page loads from its CDN.

``--quick`` runs the small configs (``NORMLAB_QUICK=1``), as the test suite does;
without it the handouts show the experiments' full default runs, which take as
long as ``make figures`` the first time and reuse its cache afterwards.

The same functions serve the tests: :func:`execute` once per notebook, then
:func:`to_html` for the browser check.

Lessons, solutions and set-up
-----------------------------
* A lesson is ``notebooks/NN_name.ipynb``. Its **set-up** is its code before the first
  section heading (a markdown cell starting ``## ``): the parameters, the imports and
  the data, nothing slow.
* Its solutions are ``notebooks/solutions/NN_name_solutions.ipynb``, one section
  ``## Exercise K · title`` per exercise of the lesson, in its order. When the answers
  need the lesson's parameters or data, the first code cell gets them with
  ``lesson = lesson_setup("NN_name")`` (:func:`normlab.exercises.lesson_setup`), which
  runs the lesson's set-up and returns what it defines (``lesson.x``, ...), so the
  answers use the same numbers as the exercises and follow the lesson when it changes.
  Like a lesson, a solutions notebook calls the experiments rather than re-implementing
  them.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from normlab.experiments.framework import CACHE_ENVIRONMENT_VARIABLE

__all__ = [
    "NOTEBOOK_DIR",
    "SOLUTIONS_DIR",
    "execute",
    "lesson_path",
    "lessons",
    "notebooks",
    "setup_sources",
    "solutions",
    "title_of",
    "to_html",
    "write_handouts",
]

#: The lessons, next to the package in a checkout of the repository.
NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
#: One solutions notebook per lesson that has exercises answered.
SOLUTIONS_DIR = NOTEBOOK_DIR / "solutions"
#: A cell that runs longer than this is an error in the tests; ``make handouts`` has no limit.
QUICK_CELL_TIMEOUT_SECONDS = 300


def _existing_dir(directory: Path) -> Path:
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no notebooks at {directory}: the lessons are in a checkout of the normlab "
            "repository (an installed normlab has no notebooks/ next to it)."
        )
    return directory


def lessons() -> list[Path]:
    """The lessons, ``notebooks/NN_name.ipynb``, in order."""
    return sorted(_existing_dir(NOTEBOOK_DIR).glob("*.ipynb"))


def solutions() -> list[Path]:
    """The solutions notebooks, ``notebooks/solutions/NN_name_solutions.ipynb``, in order."""
    if not SOLUTIONS_DIR.is_dir():
        return []
    return sorted(SOLUTIONS_DIR.glob("*_solutions.ipynb"))


def notebooks() -> list[Path]:
    """Every lesson, then every solutions notebook: what ``make handouts`` runs."""
    return lessons() + solutions()


def lesson_path(lesson: str) -> Path:
    """The lesson called ``lesson``: its file name without ``.ipynb`` or its number, "01"."""
    candidates = [
        path for path in lessons() if path.stem == lesson or path.stem.startswith(f"{lesson}_")
    ]
    if len(candidates) != 1:
        names = ", ".join(path.stem for path in lessons())
        raise ValueError(f"no single lesson called {lesson!r}; the lessons are: {names}")
    return candidates[0]


def setup_sources(path: Path) -> list[str]:
    """The sources of the code cells before the lesson's first section heading (``## ...``)."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    sources = []
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and source.lstrip().startswith("## "):
            break
        if cell["cell_type"] == "code" and source.strip():
            sources.append(source)
    return sources


def _kernel_environment(quick: bool) -> dict[str, str]:
    environment = dict(os.environ)
    environment.pop("MPLBACKEND", None)  # the kernel draws with the inline backend
    cache = environment.get(CACHE_ENVIRONMENT_VARIABLE)
    if cache:  # the kernel starts in the notebook's folder: a relative cache means this one's
        environment[CACHE_ENVIRONMENT_VARIABLE] = str(Path(cache).resolve())
    if quick:
        environment["NORMLAB_QUICK"] = "1"
    else:
        environment.pop("NORMLAB_QUICK", None)
    return environment


def execute(path: Path, *, quick: bool = False, timeout: int | None = None):
    """Run the notebook at ``path`` top to bottom in a fresh kernel; return it with outputs.

    The kernel starts in the notebook's folder. ``quick`` sets ``NORMLAB_QUICK=1`` (the
    small configs); ``timeout`` limits each cell, in seconds (None: no limit). A cell
    that raises stops the run with ``nbclient.exceptions.CellExecutionError``, naming it.
    """
    import nbclient
    import nbformat

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env=_kernel_environment(quick))
    return notebook


def to_html(notebook) -> str:
    """The executed ``notebook`` as one HTML page, its figures inline as ``data:`` URIs."""
    import nbconvert

    exporter = nbconvert.HTMLExporter()
    page, _ = exporter.from_notebook_node(notebook)
    return page


def title_of(notebook, fallback: str) -> str:
    """The text of the notebook's first ``# `` heading (``fallback`` if it has none)."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            return cell.source.lstrip()[2:].splitlines()[0].strip()
    return fallback


def _index(entries: Sequence[tuple[str, str]]) -> str:
    items = "\n".join(
        f'<li><a href="{html.escape(file_name)}">{html.escape(title)}</a></li>'
        for file_name, title in entries
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>normlab handouts</title></head>\n"
        "<body><h1>normlab handouts</h1>\n<ul>\n" + items + "\n</ul>\n</body></html>\n"
    )


def write_handouts(out_dir: Path, *, quick: bool = False, paths=None) -> list[Path]:
    """Execute each notebook (default: :func:`notebooks`) and write its page into ``out_dir``.

    Returns the pages written, ``index.html`` last.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timeout = QUICK_CELL_TIMEOUT_SECONDS if quick else None
    written, entries = [], []
    for path in notebooks() if paths is None else [Path(path) for path in paths]:
        print(f"running {path.name}", file=sys.stderr, flush=True)
        notebook = execute(path, quick=quick, timeout=timeout)
        page = out_dir / f"{path.stem}.html"
        page.write_text(to_html(notebook), encoding="utf-8")
        written.append(page)
        entries.append((page.name, title_of(notebook, path.stem)))
    index = out_dir / "index.html"
    index.write_text(_index(entries), encoding="utf-8")
    return [*written, index]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m normlab.handouts",
        description="Execute every notebook (lessons and solutions) and write HTML handouts.",
    )
    parser.add_argument("--out", type=Path, default=Path("handouts"), help="default: handouts/")
    parser.add_argument(
        "--quick", action="store_true", help="the small configs (NORMLAB_QUICK=1), seconds each"
    )
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="only these notebooks (default: all of them)"
    )
    arguments = parser.parse_args(argv)
    pages = write_handouts(arguments.out, quick=arguments.quick, paths=arguments.notebooks or None)
    print(f"wrote {len(pages)} pages into {arguments.out}/ (open {pages[-1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
