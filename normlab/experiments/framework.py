"""What every experiment is built from: a config, a cached sweep, deterministic JSON.

An experiment module reads top to bottom (see ``variance_numerics.py``)::

    NAME = "my_experiment"

    @dataclass(frozen=True)
    class Config(ExperimentConfig):        # the full-size defaults
        batch_sizes: tuple[int, ...] = (2, 4, 8, 16, 32)
        seeds: tuple[int, ...] = (0, 1, 2)

        @classmethod
        def quick(cls) -> "Config":        # the small version the tests and --quick use
            return cls(batch_sizes=(2, 8), seeds=(0, 1))

    def measure_one(run: dict) -> dict:    # one point of the sweep, seeded from `run`
        ...

    def run(config: Config, options: SweepOptions | None = None) -> dict:
        runs = grid(batch_size=config.batch_sizes, seed=config.seeds)
        measured = sweep(NAME, measure_one, runs, options)
        return {"config": config.to_dict(), ...}   # plain numbers only

    @plotting.styled
    def plot(results: dict) -> Figure: ...

This module provides the pieces:

* :class:`ExperimentConfig`: base class of every ``Config``; checks the fields
  the command line can override (``batch_sizes``, ``seq_lens``, ``seeds``) and
  calls the experiment's own :meth:`~ExperimentConfig.validate` on construction,
  so an invalid config cannot exist.
* :func:`grid`: the runs of a sweep, as the product of a few axes.
* :func:`sweep`: maps a function over the runs with a progress bar, caching each
  finished run as its own small JSON file (keyed by the experiment, the run and
  the normlab source code), so an interrupted sweep resumes and a re-plot is
  instant. Optional process parallelism gives the same numbers as one process.
* :func:`canonical`, :func:`results_json`, :func:`save_results`,
  :func:`load_results`: results as deterministic JSON (sorted keys, floats
  rounded to :data:`RESULT_SIGNIFICANT_DIGITS` digits, no timestamps), so the
  same command writes byte-identical files.
* :class:`Experiment`: the uniform handle that :func:`normlab.experiments.get`
  returns for the command line and notebooks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from normlab._atomic import write_atomic

__all__ = [
    "OVERRIDABLE_FIELDS",
    "RESULT_SIGNIFICANT_DIGITS",
    "Experiment",
    "ExperimentConfig",
    "SweepOptions",
    "apply_overrides",
    "cache_key",
    "canonical",
    "grid",
    "load_results",
    "results_json",
    "save_results",
    "source_hash",
    "sweep",
]

#: Saved results keep this many significant digits, so that last-bit differences
#: between machines (a different BLAS, SIMD width) do not change the files.
RESULT_SIGNIFICANT_DIGITS = 10

#: Config fields that the command line can set (``--batch-sizes``, ``--seq-lens``,
#: ``--seeds``) in every experiment whose Config has them.
OVERRIDABLE_FIELDS = ("batch_sizes", "seq_lens", "seeds")

#: Files of the normlab package that cannot change any number an experiment
#: computes; editing them (a colour, a CLI message) keeps the cached runs.
_FILES_NOT_IN_SOURCE_HASH = frozenset({"plotting.py", "cli.py", "__main__.py"})

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------


class ExperimentConfig:
    """Base class of every experiment's ``Config`` (a frozen dataclass).

    Subclasses are ``@dataclass(frozen=True)`` classes whose field defaults are the
    full-size experiment, with a ``quick()`` classmethod for the small version.
    Construction (including :func:`dataclasses.replace`) runs :meth:`validate`,
    which raises ``ValueError`` with a one-line message on a bad value.

    Common fields, checked here whenever a Config has them:

    * ``batch_sizes``: tuple of int ≥ 1
    * ``seq_lens``: tuple of int ≥ 1
    * ``seeds``: tuple of int ≥ 0 (``--seeds N`` on the command line means ``(0, ..., N-1)``)
    """

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def quick(cls):
        """The small version of the experiment (used by ``--quick`` and the tests)."""
        raise NotImplementedError(f"{cls.__module__}.{cls.__qualname__} must define quick()")

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message if the config cannot run.

        Subclasses extend it (calling ``super().validate()`` first), e.g. an
        experiment that trains BatchNorm rejects batch size 1.
        """
        for name in ("batch_sizes", "seq_lens"):
            if hasattr(self, name):
                _check_int_tuple(name, getattr(self, name), minimum=1)
        if hasattr(self, "seeds"):
            _check_int_tuple("seeds", self.seeds, minimum=0)

    def to_dict(self) -> dict:
        """The config as plain JSON-able data (tuples become lists in JSON)."""
        return dataclasses.asdict(self)


def _check_int_tuple(name: str, values, *, minimum: int) -> None:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty tuple of integers, got {values!r}")
    for value in values:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ValueError(f"{name} must contain integers, got {value!r} in {tuple(values)}")
        if value < minimum:
            raise ValueError(f"{name} must all be ≥ {minimum}, got {value} in {tuple(values)}")


def apply_overrides(config, overrides: Mapping[str, Any]):
    """Replace the fields of ``config`` named in ``overrides`` that it has.

    Returns ``(new_config, ignored)`` where ``ignored`` lists the override names
    this config has no field for. Raises ``ValueError`` (from :meth:`validate`)
    if the new values are invalid.
    """
    field_names = {field.name for field in dataclasses.fields(config)}
    applicable = {name: value for name, value in overrides.items() if name in field_names}
    ignored = [name for name in overrides if name not in field_names]
    return dataclasses.replace(config, **applicable), ignored


# ---------------------------------------------------------------------------
# Runs of a sweep
# ---------------------------------------------------------------------------


def grid(**axes: Sequence) -> list[dict]:
    """All combinations of the given axes, as a list of small run dicts.

    The last axis varies fastest, as in nested ``for`` loops, so a flat list of
    per-run numbers reshapes to ``(len(first axis), len(second axis), ...)``:

    >>> for run in grid(method=["batch", "layer"], seed=[0, 1]):
    ...     print(run)
    {'method': 'batch', 'seed': 0}
    {'method': 'batch', 'seed': 1}
    {'method': 'layer', 'seed': 0}
    {'method': 'layer', 'seed': 1}
    """
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in product(*axes.values())]


@dataclass(frozen=True)
class SweepOptions:
    """How :func:`sweep` runs: caching, progress bar, processes.

    Attributes
    ----------
    cache_dir : Path or None, default None
        Root of the per-run cache; a sweep named ``name`` keeps its runs in
        ``cache_dir / name``. None computes everything and stores nothing.
        The command line uses ``<out>/.cache``.
    progress : bool, default True
        Show a tqdm bar on stderr (only when stderr is a terminal).
    jobs : int, default 1
        Worker processes. Every run is seeded from its own run dict, so any
        number of jobs gives the same results as one.
    force : bool, default False
        Recompute (and overwrite) runs that are already cached.
    """

    cache_dir: Path | None = None
    progress: bool = True
    jobs: int = 1
    force: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.jobs, int) or isinstance(self.jobs, bool) or self.jobs < 1:
            raise ValueError(f"jobs must be an integer ≥ 1, got {self.jobs!r}")
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))


def sweep(
    name: str,
    run_one: Callable[[dict], Any],
    runs: Sequence[dict],
    options: SweepOptions | None = None,
) -> list:
    """``[run_one(run) for run in runs]``, with a cache, a progress bar and processes.

    Parameters
    ----------
    name : str
        The experiment's name; names the cache folder and the progress bar.
    run_one : callable
        A module-level function (worker processes import it by name) taking one
        run dict and returning JSON-able numbers (dicts, lists, floats, ints,
        strings; numpy scalars and arrays are converted). It must draw all its
        randomness from the run dict, e.g. ``np.random.default_rng(run["seed"])``.
    runs : sequence of dict
        Small JSON-able dicts, e.g. from :func:`grid`.
    options : SweepOptions, optional
        Cache folder, progress bar, jobs, force. Default: no cache, one process.

    Returns
    -------
    list
        The results in the order of ``runs``. Each has been through JSON, so a
        result computed now and one loaded from the cache are identical.

    Each finished run is written at once to ``cache_dir/name/<key>.json``, with
    ``key`` = :func:`cache_key` (a hash of ``name``, the run dict and the normlab
    source code). The write is atomic (a temporary file in the same folder, then
    ``os.replace``), so an interrupted sweep (Ctrl-C) leaves only whole files,
    and the next call computes only the runs that are missing. With ``jobs > 1``
    the workers ignore Ctrl-C; the parent stops handing out runs and re-raises.
    """
    options = options or SweepOptions()
    runs = [_plain(run) for run in runs]
    cache_folder = options.cache_dir / name if options.cache_dir is not None else None
    if cache_folder is not None:
        cache_folder.mkdir(parents=True, exist_ok=True)
        paths = [cache_folder / f"{cache_key(name, run)}.json" for run in runs]
    else:
        paths = [None] * len(runs)

    results: list = [None] * len(runs)
    todo: list[int] = []
    for index, (run, path) in enumerate(zip(runs, paths, strict=True)):
        cached = None if options.force else _read_cached_run(path, name, run)
        if cached is None:
            todo.append(index)
        else:
            results[index] = cached["result"]

    show_bar = options.progress and sys.stderr.isatty()
    with tqdm(
        total=len(runs),
        initial=len(runs) - len(todo),
        desc=name,
        unit="run",
        file=sys.stderr,
        disable=not show_bar,
        dynamic_ncols=True,
    ) as bar:
        if options.jobs == 1 or len(todo) <= 1:
            for index in todo:
                results[index] = _compute_and_store(run_one, name, runs[index], paths[index])
                bar.update()
        else:
            _compute_in_processes(run_one, name, runs, paths, todo, results, options.jobs, bar)
    return results


def _compute_in_processes(run_one, name, runs, paths, todo, results, jobs, bar) -> None:
    # "spawn" starts clean interpreters on every platform (no state inherited
    # through fork), so the worker results cannot depend on the parent process.
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(
        max_workers=min(jobs, len(todo)), mp_context=context, initializer=_ignore_ctrl_c
    )
    try:
        futures = {
            executor.submit(_compute_and_store, run_one, name, runs[index], paths[index]): index
            for index in todo
        }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update()
    except BaseException:
        # Ctrl-C or a failed run: drop the waiting runs. The few already handed
        # to a worker (about two per worker) finish and are cached before exit.
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown()


def _ignore_ctrl_c() -> None:
    """Workers leave Ctrl-C to the parent, which stops the sweep."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _compute_and_store(run_one, name: str, run: dict, path: Path | None):
    # One BLAS thread: the arrays of one run are small (more threads only add
    # overhead), and the order of a BLAS sum then cannot depend on the core count.
    with threadpool_limits(limits=1, user_api="blas"):
        result = _plain(run_one(run))
    if path is not None:
        record = {"experiment": name, "run": run, "result": result}
        write_atomic(path, json.dumps(record, sort_keys=True, indent=1) + "\n")
    return result


def _read_cached_run(path: Path | None, name: str, run: dict) -> dict | None:
    """The cached record of ``run``, or None if absent, unreadable or not this run."""
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # e.g. edited by hand: recompute and overwrite
    if not isinstance(record, dict) or "result" not in record:
        return None
    if record.get("experiment") != name or record.get("run") != run:
        return None  # not this run (a hash collision would land here)
    return record


def cache_key(name: str, run: dict) -> str:
    """The cache file name of one run: a hash of the experiment, the run and the code.

    Any change to the normlab source (see :func:`source_hash`) or to numpy's
    version gives new keys, so stale numbers are never reused.
    """
    identity = {
        "experiment": name,
        "run": _plain(run),
        "source": source_hash(),
        "numpy": np.__version__,
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


@lru_cache(maxsize=1)
def source_hash() -> str:
    """SHA-256 of every ``.py`` file of the normlab package (paths and contents).

    Files that only draw or print (:data:`_FILES_NOT_IN_SOURCE_HASH`) are left
    out, so restyling a figure does not recompute its numbers.
    """
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(_PACKAGE_DIR).as_posix()
        if path.name in _FILES_NOT_IN_SOURCE_HASH and path.parent == _PACKAGE_DIR:
            continue
        digest.update(relative.encode("utf-8") + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# Deterministic JSON
# ---------------------------------------------------------------------------


def _plain(value):
    """``value`` as it comes back from JSON (tuples → lists, numpy → Python)."""
    return json.loads(json.dumps(value, default=_numpy_to_python))


def _numpy_to_python(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-able: {value!r}")


def _round_floats(value, digits: int):
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {key: _round_floats(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [_round_floats(item, digits) for item in value]
    return value


def canonical(results, digits: int = RESULT_SIGNIFICANT_DIGITS):
    """``results`` as plain JSON data with floats rounded to ``digits`` significant digits.

    This is exactly what :func:`save_results` writes and :func:`load_results`
    reads back, so a figure drawn from ``canonical(results)`` is the same as one
    drawn from the saved file.
    """
    return _round_floats(_plain(results), digits)


def results_json(results) -> str:
    """The text of a results file: canonical numbers, sorted keys, one list of numbers a line.

    Valid JSON, laid out for reading and for small diffs: a dict puts each key on
    its own line, a list of plain values stays on one line, and a list of lists
    puts each inner list on its own line (a table reads as rows).
    """
    return _layout(canonical(results), indent="") + "\n"


def _layout(value, indent: str) -> str:
    inner = indent + " "
    if isinstance(value, dict) and value:
        entries = [
            f"{inner}{json.dumps(str(key), ensure_ascii=False)}: {_layout(value[key], inner)}"
            for key in sorted(value)
        ]
        return "{\n" + ",\n".join(entries) + f"\n{indent}}}"
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        items = [f"{inner}{_layout(item, inner)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def save_results(path: str | os.PathLike, results) -> Path:
    """Write ``results`` as deterministic JSON to ``path``, atomically (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, results_json(results))
    return path


def load_results(path: str | os.PathLike):
    """Read results saved by :func:`save_results` (e.g. ``figures/<name>.json``)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------
# The handle the registry returns
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Experiment:
    """One experiment module behind a uniform interface.

    ``experiment.config(quick=False)`` gives its default (or quick) Config,
    ``experiment.run(config, options)`` its results in canonical form (as saved),
    ``experiment.plot(results)`` its figure.
    """

    name: str
    module: ModuleType

    @property
    def description(self) -> str:
        """The first line of the module docstring."""
        return (self.module.__doc__ or "").strip().splitlines()[0].strip()

    @property
    def config_class(self) -> type:
        return self.module.Config

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(self.config_class))

    def config(self, *, quick: bool = False, **overrides):
        """The default (or quick) Config, with the fields in ``overrides`` replaced.

        Overrides that are None are skipped, so a notebook's parameters cell can
        say ``BATCH_SIZES = None`` for "the experiment's own choice"::

            config = experiment.config(quick=QUICK, batch_sizes=BATCH_SIZES, seeds=SEEDS)

        A field the Config does not have is a TypeError naming the fields it has.
        """
        config = self.config_class.quick() if quick else self.config_class()
        chosen = {name: value for name, value in overrides.items() if value is not None}
        unknown = sorted(set(chosen) - set(self.field_names))
        if unknown:
            raise TypeError(
                f"{self.name} has no config field {', '.join(unknown)}; "
                f"its fields are: {', '.join(self.field_names)}"
            )
        return dataclasses.replace(config, **chosen) if chosen else config

    def run(self, config, options: SweepOptions | None = None):
        return canonical(self.module.run(config, options))

    def plot(self, results):
        return self.module.plot(results)
