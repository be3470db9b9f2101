"""The command line: ``python -m normlab list | figures | run | slides``.

::

    python -m normlab list                          # the experiments, one line each
    python -m normlab figures                       # every figure, full size, into figures/
    python -m normlab figures --quick --out /tmp/f  # small versions (seconds)
    python -m normlab figures --only batch_stat_noise --batch-sizes 2 4 8 16 --seeds 5
    python -m normlab run variance_numerics --seeds 20   # the same as figures --only NAME
    python -m normlab slides                        # lecture slides from figures/*.json

For each experiment ``figures`` writes ``<out>/<name>.png`` (and ``.svg``, ``.pdf``
as asked), its numbers ``<out>/<name>.json``, and caches every finished run in
``<out>/.cache/<name>/``: rerunning is instant, and an interrupted run (Ctrl-C)
resumes where it stopped. ``--force`` recomputes.

Where the files go without ``--out``: ``figures/`` holds the lecture figures, so only
the default configuration writes there. A ``--quick`` run writes to ``figures-quick/``,
any other change of configuration (``--batch-sizes``, ``--seq-lens``, ``--seeds``) to
``figures-custom/``; the command says so before it runs.

``--batch-sizes``, ``--seq-lens`` and ``--seeds N`` (meaning seeds 0..N-1) change
the experiments whose Config has that field and are ignored, with a note, by
the others; sizes are sorted and repeats dropped, with a note. Every input is
checked before anything runs: a bad one gives a one-line ``normlab: error: ...``
on stderr, exit code 2, and no files. A config that runs but means little (e.g.
a batch size so large that training takes a handful of steps) gets a warning.

``slides`` draws, for every experiment that has slides (``list`` marks them), its
one-message 16:9 slides from the results saved in ``figures/<name>.json`` (``--from DIR``
reads another folder; nothing is recomputed) into ``slides/<name>-<slide>.png`` (``--out
DIR``, ``--formats``), and all of them, in the order of the experiments, into
``slides/deck.pdf``. A missing results file is an error naming the command that writes it.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from normlab import experiments, plotting
from normlab.experiments.framework import (
    OVERRIDABLE_FIELDS,
    Experiment,
    ExperimentConfig,
    ExperimentWarning,
    SweepOptions,
    apply_overrides,
    ctrl_c_ignored,
    load_results,
    save_results,
)

__all__ = ["main"]

EXIT_OK = 0
EXIT_USAGE = 2  # bad input, as argparse uses
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

#: Command-line flag of each overridable Config field.
FLAGS = {"batch_sizes": "--batch-sizes", "seq_lens": "--seq-lens", "seeds": "--seeds"}

#: Where the per-run cache lives, inside the output folder.
CACHE_FOLDER = ".cache"

#: Output folders when ``--out`` is not given: the lecture figures (default configuration
#: only), quick runs, and every other configuration.
LECTURE_FOLDER = Path("figures")
QUICK_FOLDER = Path("figures-quick")
CUSTOM_FOLDER = Path("figures-custom")

#: Where ``slides`` writes by default, and the file name of its PDF deck there.
SLIDES_FOLDER = Path("slides")
DECK_NAME = "deck.pdf"


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors raise :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(message)


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be ≥ {minimum}, got {value}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m normlab",
        description="Rerun normlab's experiments and regenerate its lecture figures.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="list the experiments, one line each")

    options = _Parser(add_help=False)
    options.add_argument(
        "--batch-sizes",
        nargs="+",
        type=_int_at_least(1, "batch size"),
        metavar="B",
        help="batch sizes, for the experiments that take them",
    )
    options.add_argument(
        "--seq-lens",
        nargs="+",
        type=_int_at_least(1, "sequence length"),
        metavar="T",
        help="sequence lengths, for the experiments that take them",
    )
    options.add_argument(
        "--seeds",
        type=_int_at_least(1, "number of seeds"),
        metavar="N",
        help="run seeds 0, 1, ..., N-1",
    )
    options.add_argument("--quick", action="store_true", help="small configs (seconds per figure)")
    options.add_argument(
        "--out",
        type=Path,
        default=None,
        help=(
            "output folder (default: figures/ for the default configuration, figures-quick/ "
            "with --quick, figures-custom/ for any other)"
        ),
    )
    options.add_argument(
        "--formats",
        nargs="+",
        choices=plotting.FORMATS,
        default=["png", "svg"],
        help="figure formats (default: png svg)",
    )
    options.add_argument(
        "--jobs",
        type=_int_at_least(1, "jobs"),
        default=1,
        metavar="N",
        help="worker processes per sweep (same results as 1)",
    )
    options.add_argument(
        "--force", action="store_true", help="recompute runs that are already cached"
    )

    figures = commands.add_parser(
        "figures", parents=[options], help="run experiments and write their figures and numbers"
    )
    figures.add_argument(
        "--only", nargs="+", metavar="NAME", help="these experiments only (default: all)"
    )
    one = commands.add_parser("run", parents=[options], help="the same as figures --only NAME")
    one.add_argument("name", metavar="NAME", help="the experiment to run")

    slides = commands.add_parser(
        "slides", help="draw the lecture slides and their PDF deck from the saved results"
    )
    slides.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="these experiments only (default: all with slides)",
    )
    slides.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=LECTURE_FOLDER,
        metavar="DIR",
        help=f"the folder of the saved results <name>.json (default: {LECTURE_FOLDER}/)",
    )
    slides.add_argument(
        "--out",
        type=Path,
        default=SLIDES_FOLDER,
        metavar="DIR",
        help=f"output folder (default: {SLIDES_FOLDER}/)",
    )
    slides.add_argument(
        "--formats",
        nargs="+",
        choices=plotting.FORMATS,
        default=["png"],
        help=f"formats of the single slides (default: png; the deck is always {DECK_NAME})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        return _usage_error(f"{error} (see python -m normlab --help)")
    except SystemExit as exit_request:  # --help
        return int(exit_request.code or 0)

    if args.command == "list":
        return list_experiments()
    if args.command == "slides":
        try:
            return write_slides(plan_slides(args))
        except UsageError as error:
            return _usage_error(str(error))
    names = [args.name] if args.command == "run" else args.only
    try:
        plan = plan_figures(args, names)
    except UsageError as error:
        return _usage_error(str(error))
    try:
        return write_figures(plan)
    except KeyboardInterrupt:
        with ctrl_c_ignored():  # one message, however often Ctrl-C is pressed
            print(
                f"\nnormlab: interrupted; finished runs are kept in {plan.options.cache_dir}/ "
                "and the same command resumes from them",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED


def _usage_error(message: str) -> int:
    print(f"normlab: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# ---------------------------------------------------------------------------
# list
# ---------------------------------------------------------------------------


def list_experiments() -> int:
    """Print each experiment's name, description and the flags it takes."""
    registered = [experiments.get(name) for name in experiments.names()]
    width = max(len(experiment.name) for experiment in registered)
    for experiment in registered:
        flags = [FLAGS[field] for field in OVERRIDABLE_FIELDS if field in experiment.field_names]
        takes = f"  [{' '.join(flags)}]" if flags else ""
        has_slides = "  (slides)" if experiment.has_slides else ""
        print(f"{experiment.name:<{width}}  {experiment.description}{takes}{has_slides}")
    return EXIT_OK


# ---------------------------------------------------------------------------
# figures: check everything first, then run
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything ``figures`` will do, already checked."""

    selected: list[tuple[Experiment, ExperimentConfig]]  # experiments with their configs
    out: Path
    formats: list[str]
    options: SweepOptions  # cache folder, jobs, force
    notes: list[str]  # overrides ignored or normalized, where the files go
    warnings: list[str]  # configs that run but whose numbers may mean little


def plan_figures(args: argparse.Namespace, names: Sequence[str] | None) -> Plan:
    """Resolve names, build and validate every config, check the output folder.

    Raises :class:`UsageError` on the first problem; nothing has run or been
    written then (except the output folder itself, created to test it).
    """
    selected = _resolve_names(names)
    overrides = {}
    if args.batch_sizes is not None:
        overrides["batch_sizes"] = tuple(args.batch_sizes)
    if args.seq_lens is not None:
        overrides["seq_lens"] = tuple(args.seq_lens)
    if args.seeds is not None:
        overrides["seeds"] = tuple(range(args.seeds))

    configured = []
    notes: list[str] = []
    concerns: list[str] = []
    for experiment in selected:
        try:
            config, ignored, normalized = apply_overrides(
                experiment.config(quick=args.quick), overrides
            )
        except ValueError as error:
            raise UsageError(f"{experiment.name}: {error}") from None
        notes.extend(
            f"{FLAGS[field]} does not apply to {experiment.name} (its Config has no {field})"
            for field in ignored
        )
        notes.extend(f"{experiment.name}: {note}" for note in normalized)
        concerns.extend(f"{experiment.name}: {concern}" for concern in config.concerns())
        configured.append((experiment, config))

    out = args.out
    if out is None:
        out = default_output_folder(configured, quick=args.quick)
        if out != LECTURE_FOLDER:
            notes.append(
                f"not the default configuration, so the files go to {out}/ "
                f"({LECTURE_FOLDER}/ keeps the lecture figures; --out DIR chooses the folder)"
            )
    _check_writable(out)
    options = SweepOptions(cache_dir=out / CACHE_FOLDER, jobs=args.jobs, force=args.force)
    return Plan(configured, out, list(dict.fromkeys(args.formats)), options, notes, concerns)


def default_output_folder(
    configured: Sequence[tuple[Experiment, ExperimentConfig]], *, quick: bool
) -> Path:
    """figures/ when every config is its experiment's default, else figures-quick/ or -custom/."""
    if all(config == experiment.config() for experiment, config in configured):
        return LECTURE_FOLDER
    if quick and all(config == experiment.config(quick=True) for experiment, config in configured):
        return QUICK_FOLDER
    return CUSTOM_FOLDER


def _resolve_names(names: Sequence[str] | None) -> list[Experiment]:
    if not names:
        return [experiments.get(name) for name in experiments.names()]
    unknown = [name for name in names if name not in experiments.names()]
    if unknown:
        raise UsageError(experiments.unknown_name_message(unknown[0]))
    return [experiments.get(name) for name in dict.fromkeys(names)]


def _check_writable(out: Path, *, with_cache: bool = True) -> None:
    """Create ``out`` (and its cache folder) and write a probe file; UsageError if that fails."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {str(out)!r} is a file")
    try:
        (out / CACHE_FOLDER if with_cache else out).mkdir(parents=True, exist_ok=True)
        probe = out / ".normlab-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"cannot write to output folder {str(out)!r}: {reason}") from None


def write_figures(plan: Plan) -> int:
    """Run each planned experiment, save its numbers and figures, print a summary."""
    for note in plan.notes:
        print(f"normlab: note: {note}", file=sys.stderr)
    for concern in plan.warnings:
        print(f"normlab: warning: {concern}", file=sys.stderr)
    width = max(len(experiment.name) for experiment, _ in plan.selected)
    lines = []
    started = time.perf_counter()
    for experiment, config in plan.selected:
        experiment_started = time.perf_counter()
        with warnings.catch_warnings():  # its concerns were printed above, before any run
            warnings.simplefilter("ignore", ExperimentWarning)
            results = experiment.run(config, plan.options)
        json_path = save_results(plan.out / f"{experiment.name}.json", results)
        figure = experiment.plot(results)
        figure_paths = plotting.save_figure(figure, plan.out / experiment.name, plan.formats)
        seconds = time.perf_counter() - experiment_started
        files = "  ".join(str(path) for path in [*figure_paths, json_path])
        lines.append(f"  {experiment.name:<{width}}  {seconds:6.1f} s  {files}")

    total = time.perf_counter() - started
    count = len(plan.selected)
    print(f"normlab: wrote {count} figure{'s' * (count != 1)} in {total:.1f} s")
    print("\n".join(lines))
    print(
        f"numbers: {plan.out}/<name>.json next to each figure; "
        f"finished runs cached in {plan.options.cache_dir}/ (--force recomputes)"
    )
    return EXIT_OK


# ---------------------------------------------------------------------------
# slides: drawn from the saved results, nothing recomputed
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SlidePlan:
    """Everything ``slides`` will draw, already checked: the saved results of each experiment."""

    selected: list[tuple[Experiment, Path, dict]]  # experiment, its results file, the results
    out: Path
    formats: list[str]


def plan_slides(args: argparse.Namespace) -> SlidePlan:
    """Resolve names, read every results file, check the output folder; UsageError on a problem.

    Nothing is drawn or written before every results file has been read.
    """
    with_slides = [name for name in experiments.names() if experiments.get(name).has_slides]
    if args.only:
        selected = _resolve_names(args.only)
        without = [experiment.name for experiment in selected if not experiment.has_slides]
        if without:
            raise UsageError(
                f"{without[0]} has no slides yet; the experiments with slides are: "
                + ", ".join(with_slides)
            )
    else:
        selected = [experiments.get(name) for name in with_slides]
    loaded = []
    for experiment in selected:
        path = args.source / f"{experiment.name}.json"
        if not path.is_file():
            raise UsageError(
                f"{path} is missing: slides are drawn from the saved results, nothing is "
                f"recomputed; write it with: {_figures_command(experiment.name, args.source)}"
            )
        try:
            results = load_results(path)
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot read the results {path}: {error}") from None
        loaded.append((experiment, path, results))
    _check_writable(args.out, with_cache=False)
    return SlidePlan(loaded, args.out, list(dict.fromkeys(args.formats)))


def _figures_command(name: str, source: Path) -> str:
    """The command that writes ``<source>/<name>.json``."""
    if source == LECTURE_FOLDER:
        return f"python -m normlab figures --only {name}"
    if source == QUICK_FOLDER:
        return f"python -m normlab figures --quick --only {name}"
    return f"python -m normlab figures --only {name} --out {source}"


def write_slides(plan: SlidePlan) -> int:
    """Draw every slide, then save each one and the deck of all; print what was written."""
    drawn = []  # (file name without suffix, figure), in the order of the deck
    for experiment, path, results in plan.selected:
        try:
            named = experiment.slides(results)
        except KeyError as error:
            rewrite = _figures_command(experiment.name, path.parent)
            raise UsageError(
                f"{path} has no entry {error}: it was written by another version of "
                f"{experiment.name}; rewrite it with: {rewrite}"
            ) from None
        drawn.extend((f"{experiment.name}-{name}", figure) for name, figure in named)
    lines = []
    for name, figure in drawn:
        written = plotting.save_figure(
            figure, plan.out / name, plan.formats, dpi=plotting.SLIDE_DPI
        )
        lines.append("  " + "  ".join(str(one) for one in written))
    deck_path = plotting.save_deck([figure for _, figure in drawn], plan.out / DECK_NAME)
    count = len(plan.selected)
    print(
        f"normlab: wrote {len(drawn)} slides of {count} experiment{'s' * (count != 1)} "
        f"and the deck {deck_path} ({len(drawn)} pages)"
    )
    print("\n".join(lines))
    return EXIT_OK
