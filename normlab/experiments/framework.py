"""What every experiment is built from: declared config fields, runs, a cached sweep, tables.

An experiment declares its fields and its measurement; the framework does the rest
(see ``variance_numerics.py``)::

    NAME = "my_experiment"

    @dataclass(frozen=True)
    class Config(ExperimentConfig):            # the full-size defaults, each field checked
        batch_sizes: tuple[int, ...] = integers((2, 4, 8, 16), minimum=2)
        num_batches: int = integer(1000, minimum=10, why="to measure a spread")
        seeds: tuple[int, ...] = seeds(5)

        @classmethod
        def quick(cls) -> "Config":            # the small version the tests and --quick use
            return cls(batch_sizes=(2, 8), seeds=(0, 1))

    def measure_one(run: dict) -> dict:        # one point of the sweep, seeded from `run`
        ...

    def run(config: Config, options: SweepOptions | None = None) -> dict:
        measured = config.runs(batch_size="batch_sizes", seed="seeds").measure(
            NAME, measure_one, options
        )
        spread = measured.table("spread")      # (batch sizes, seeds)
        return {"config": config.to_dict(), "spread": spread.tolist()}   # plain numbers

    @plotting.styled
    def plot(results: dict) -> Figure: ...

    @plotting.slide                            # optional: the lecture slides
    def slides(results: dict) -> list[tuple[str, Figure]]: ...

``slides`` is optional. It draws from the saved results only (``python -m normlab slides``
reads ``figures/<name>.json``; nothing is recomputed) and returns the experiment's slides in
the order they are shown: ``(name, figure)`` pairs, the name becoming the file name
``<experiment>-<name>.png``, or bare figures, named 1, 2, ... Each figure is made by
:func:`normlab.plotting.slide_figure`: one message per slide, stated by its title in plain
words (no code, no field names), at most a one-line caption, every text ≥ 18 pt at
1280 × 720. ``tests/test_slides.py`` checks every experiment that defines it.

The pieces:

* Field declarations :func:`integer`, :func:`number`, :func:`integers`, :func:`numbers`,
  :func:`choices`, :func:`seeds` and :func:`setup`: a default and its check (a range, a set
  of choices; sequences of sizes sorted and without repeats). :class:`ExperimentConfig`
  runs every check on construction, then the experiment's own :meth:`~ExperimentConfig.validate`
  for rules that relate fields, so an invalid config cannot exist.
* :meth:`ExperimentConfig.runs`: the runs of a sweep, the product of its axes, each holding
  every config field that is not swept, so a run dict (and its cache key) always says
  everything the config says. :meth:`Runs.measure` maps the measurement over them
  (:func:`sweep`) and returns a :class:`Measured`, whose :meth:`~Measured.table` gives
  arrays indexed by the swept axes.
* :func:`sweep`: a cached, resumable map with a progress bar and optional processes. Each
  run is cached in its own JSON file, keyed by the experiment, the run and the code the
  measurement depends on (:func:`normlab.experiments.dependencies.code_hash`).
* :func:`canonical`, :func:`results_json`, :func:`save_results`, :func:`load_results`:
  results as strict, deterministic JSON (sorted keys, floats rounded to
  :data:`RESULT_SIGNIFICANT_DIGITS` digits, no NaN or Infinity, no timestamps).
* :class:`Experiment`: the uniform handle that :func:`normlab.experiments.get` returns.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import os
import platform
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import metadata
from itertools import product
from numbers import Real
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from normlab._atomic import write_atomic
from normlab.experiments.dependencies import code_hash

__all__ = [
    "CACHE_ENVIRONMENT_VARIABLE",
    "OVERRIDABLE_FIELDS",
    "RESULT_SIGNIFICANT_DIGITS",
    "Experiment",
    "ExperimentConfig",
    "ExperimentWarning",
    "FieldCheck",
    "Measured",
    "Runs",
    "SweepOptions",
    "apply_overrides",
    "cache_key",
    "canonical",
    "choices",
    "ctrl_c_ignored",
    "grid",
    "integer",
    "integers",
    "load_results",
    "measure_together",
    "number",
    "numbers",
    "progress_display",
    "results_json",
    "running_in_notebook",
    "save_results",
    "seeds",
    "setup",
    "sweep",
]

#: Saved results keep this many significant digits, so that last-bit differences
#: between machines (a different BLAS, SIMD width) do not change the files.
RESULT_SIGNIFICANT_DIGITS = 10

#: Config fields that the command line can set (``--batch-sizes``, ``--seq-lens``,
#: ``--seeds``) in every experiment whose Config has them.
OVERRIDABLE_FIELDS = ("batch_sizes", "seq_lens", "seeds")

#: What a slide's name may be: it becomes part of the file name ``<experiment>-<name>.png``.
_SLIDE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


class ExperimentWarning(UserWarning):
    """A config that runs but whose numbers may mean little (e.g. very few training steps)."""


# ---------------------------------------------------------------------------
# Config fields: a default and its check
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldCheck:
    """What a config field accepts. Built by :func:`integer`, :func:`numbers`, ...

    ``kind`` is ``"integer"``, ``"number"`` (one value), ``"integers"``, ``"numbers"``
    (a non-empty tuple of them), ``"choices"`` (a non-empty tuple of distinct strings
    from ``options``, order kept) or ``"instance"`` (an ``instance_of`` object). Bounds:
    ``minimum``/``maximum`` inclusive, ``above``/``below`` exclusive. ``sort`` sorts a
    tuple and drops repeats; ``length`` fixes its length; ``allow_none`` admits None
    entries. ``why`` is added to the message of a value out of range.
    """

    kind: str
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    below: float | None = None
    options: tuple | None = None
    sort: bool = False
    length: int | None = None
    allow_none: bool = False
    instance_of: type | None = None
    why: str = ""

    # -- checking ---------------------------------------------------------------

    def normalize(self, name: str, value):
        """``value`` as the config stores it (sorted if declared so); ValueError if invalid."""
        if self.kind in ("integer", "number"):
            if not (value is None and self.allow_none):
                self._check_one(name, value)
            return value
        if self.kind == "instance":
            if not isinstance(value, self.instance_of):
                raise ValueError(f"{name} must be a {self.instance_of.__name__}, got {value!r}")
            return value
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
            what = "strings" if self.kind == "choices" else f"{self._element_kind()}s"
            raise ValueError(f"{name} must be a non-empty tuple of {what}, got {value!r}")
        values = tuple(value)
        if self.length is not None and len(values) != self.length:
            raise ValueError(f"{name} must hold {self.length} values, got {values}")
        if self.kind == "choices":
            return self._check_choices(name, values)
        for entry in values:
            if not (entry is None and self.allow_none):
                self._check_one(name, entry, within=values)
        if self.sort:
            values = tuple(sorted(dict.fromkeys(values)))
        elif self.allow_none:  # an ordered list of settings: a repeat adds nothing
            values = tuple(dict.fromkeys(values))
        return values

    def _element_kind(self) -> str:
        return "integer" if self.kind.startswith("integer") else "number"

    def _check_one(self, name: str, value, within: tuple | None = None) -> None:
        """One value against the type and the bounds; ``within``: the tuple it is part of."""
        place = "" if within is None else f" in {within}"
        integral = self._element_kind() == "integer"
        if integral:
            valid_type = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        else:
            valid_type = isinstance(value, Real) and not isinstance(value, bool)
        if not valid_type:
            what = ("an integer" if integral else "a number") + (
                " or None" if self.allow_none else ""
            )
            verb = "be" if within is None else "contain only"
            raise ValueError(f"{name} must {verb} {what}, got {value!r}{place}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}{place}")
        if not self._within_bounds(value):
            subject = f"{name} must be" if within is None else f"{name} must all be"
            reason = f" ({self.why})" if self.why else ""
            raise ValueError(f"{subject} {self.range_text()}{reason}, got {value!r}{place}")

    def _within_bounds(self, value) -> bool:
        return (
            (self.minimum is None or value >= self.minimum)
            and (self.above is None or value > self.above)
            and (self.maximum is None or value <= self.maximum)
            and (self.below is None or value < self.below)
        )

    def range_text(self) -> str:
        """The accepted range in words: ``"≥ 2"``, ``"> 0"``, ``"in (0, 1]"``, ``"in [0, 100]"``."""
        low = None
        if self.minimum is not None:
            low = ("[", "≥", self.minimum)
        elif self.above is not None:
            low = ("(", ">", self.above)
        high = None
        if self.maximum is not None:
            high = ("]", "≤", self.maximum)
        elif self.below is not None:
            high = (")", "<", self.below)
        if low and high:
            return f"in {low[0]}{low[2]:g}, {high[2]:g}{high[0]}"
        bound = low or high
        return f"{bound[1]} {bound[2]:g}" if bound else "any value"

    def _check_choices(self, name: str, values: tuple) -> tuple:
        unknown = [value for value in values if value not in self.options]
        if unknown:
            raise ValueError(
                f"{name}: unknown {', '.join(map(repr, unknown))}; choose from {self.options}"
            )
        if len(set(values)) != len(values):
            raise ValueError(f"{name} must not repeat a value, got {values}")
        return values

    # -- values that must be rejected (for tests of every experiment) -------------

    def invalid_examples(self) -> list:
        """A few values this check rejects (the contract test tries each on every experiment)."""
        kind = self.kind
        if kind == "instance":
            return ["not a " + self.instance_of.__name__]
        if kind == "choices":
            return [(), ("no such choice",), (self.options[0], self.options[0])]
        out_of_range = []
        for bound, step in (
            (self.minimum, -1),
            (self.above, 0),
            (self.maximum, 1),
            (self.below, 0),
        ):
            if bound is not None:
                out_of_range.append(bound + step)
        wrong_type = 1.5 if self._element_kind() == "integer" else "one"
        if kind in ("integer", "number"):
            return [*out_of_range, wrong_type]
        examples = [(), (wrong_type,), *[(value,) for value in out_of_range]]
        if self.length is not None:
            examples = [(value,) * self.length for value in out_of_range] + [
                (0,) * (self.length + 1)
            ]
        return examples


def _declared(default=dataclasses.MISSING, *, factory=dataclasses.MISSING, **check) -> Any:
    return dataclasses.field(
        default=default, default_factory=factory, metadata={"check": FieldCheck(**check)}
    )


def integer(default: int | None, *, minimum=None, maximum=None, allow_none=False, why=""):
    """A config field holding one integer in ``[minimum, maximum]`` (or None if allowed)."""
    return _declared(
        default, kind="integer", minimum=minimum, maximum=maximum, allow_none=allow_none, why=why
    )


def number(default: float, *, minimum=None, above=None, maximum=None, below=None, why=""):
    """A config field holding one finite number within the given bounds."""
    bounds = {"minimum": minimum, "above": above, "maximum": maximum, "below": below}
    return _declared(default, kind="number", why=why, **bounds)


def integers(default, *, minimum=None, maximum=None, sort=True, length=None, why=""):
    """A config field holding a non-empty tuple of integers (sorted, no repeats, by default).

    Sizes on an x-axis (batch sizes, sequence lengths) are sorted so that lines never
    zig-zag; give ``sort=False`` for a tuple whose order means something (an index).
    """
    return _declared(
        tuple(default),
        kind="integers",
        minimum=minimum,
        maximum=maximum,
        sort=sort,
        length=length,
        why=why,
    )


def numbers(
    default,
    *,
    minimum=None,
    above=None,
    maximum=None,
    below=None,
    sort=True,
    allow_none=False,
    why="",
):
    """A config field holding a non-empty tuple of numbers (sorted, no repeats, by default).

    ``allow_none`` admits None entries (e.g. BatchNorm's ``momentum=None``); such a
    tuple keeps its order (repeats are dropped).
    """
    return _declared(
        tuple(default),
        kind="numbers",
        minimum=minimum,
        above=above,
        maximum=maximum,
        below=below,
        sort=sort and not allow_none,
        allow_none=allow_none,
        why=why,
    )


def choices(default, options: Sequence[str]):
    """A config field holding a non-empty tuple of distinct strings from ``options``."""
    return _declared(tuple(default), kind="choices", options=tuple(options))


def seeds(count: int):
    """The ``seeds`` field: seeds ``0, ..., count - 1`` by default, each an integer ≥ 0."""
    return integers(tuple(range(count)), minimum=0)


def setup(kind: type):
    """A config field holding a settings object such as ``TrainingSetup`` (default ``kind()``)."""
    return _declared(factory=kind, kind="instance", instance_of=kind)


# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------


class ExperimentConfig:
    """Base class of every experiment's ``Config`` (a frozen dataclass).

    Subclasses are ``@dataclass(frozen=True)`` classes whose fields are declared with
    :func:`integer`, :func:`integers`, ... (defaults: the full-size experiment), with a
    ``quick()`` classmethod for the small version. Construction (also through
    :func:`dataclasses.replace`) checks every declared field, sorts the sequences
    declared sorted, then calls :meth:`validate`; a bad value is a ``ValueError``
    with a one-line message naming the field.
    """

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check = field.metadata.get("check")
            if check is not None:
                value = check.normalize(field.name, getattr(self, field.name))
                object.__setattr__(self, field.name, value)
        self.validate()

    @classmethod
    def quick(cls):
        """The small version of the experiment (used by ``--quick`` and the tests)."""
        raise NotImplementedError(f"{cls.__module__}.{cls.__qualname__} must define quick()")

    def validate(self) -> None:
        """Rules that relate fields (each field alone is checked already); ValueError if broken."""

    def concerns(self) -> list[str]:
        """Reasons why this config runs but its numbers may mean little (warnings, not errors)."""
        return []

    def to_dict(self) -> dict:
        """The config as plain JSON-able data (tuples become lists in JSON)."""
        return dataclasses.asdict(self)

    def runs(self, **axes: str | Sequence) -> Runs:
        """The runs of one sweep: every combination of ``axes``, each with the other fields.

        An axis is ``key=values``: the name of a config field (that field is swept: its
        values go under ``key``) or a sequence of values. Every config field that no axis
        sweeps enters each run under its own name, so the run dict, and with it the
        cache key, holds everything the config says. An axis key must not be a field
        name (a run would then hold two meanings under one name).

        >>> # runs = config.runs(batch_size="batch_sizes", seed="seeds", method=("batch",))
        """
        names = [field.name for field in dataclasses.fields(self)]
        values: dict[str, tuple] = {}
        swept: dict[str, str] = {}
        for key, spec in axes.items():
            if key in names:
                raise ValueError(
                    f"axis {key!r} has the name of a config field of {type(self).__name__}; "
                    "name the axis after one value (e.g. batch_size for batch_sizes)"
                )
            if isinstance(spec, str):
                if spec not in names:
                    raise ValueError(f"{type(self).__name__} has no field {spec!r} to sweep")
                swept[key] = spec
                values[key] = tuple(getattr(self, spec))
            else:
                values[key] = tuple(spec)
        fixed = {name: _plain(getattr(self, name)) for name in names if name not in swept.values()}
        return Runs(axes=values, fixed=fixed, swept=swept)


def apply_overrides(config, overrides: Mapping[str, Any]):
    """Replace the fields of ``config`` named in ``overrides`` that it has.

    Returns ``(new_config, ignored, notes)``: ``ignored`` lists the override names this
    config has no field for, ``notes`` says where a value was sorted or had repeats
    dropped. Raises ``ValueError`` if a new value is invalid.
    """
    field_names = {field.name for field in dataclasses.fields(config)}
    applicable = {name: value for name, value in overrides.items() if name in field_names}
    ignored = [name for name in overrides if name not in field_names]
    new_config = dataclasses.replace(config, **applicable)
    return new_config, ignored, _normalization_notes(new_config, applicable)


def _normalization_notes(config, given: Mapping[str, Any]) -> list[str]:
    notes = []
    for name, value in given.items():
        stored = getattr(config, name)
        if isinstance(value, (tuple, list)) and tuple(value) != tuple(stored):
            shown = " ".join(map(str, value))
            notes.append(f"{name} {shown} sorted and without repeats: {' '.join(map(str, stored))}")
    return notes


# ---------------------------------------------------------------------------
# Runs of a sweep and their tables
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
class Runs:
    """The runs of one sweep (from :meth:`ExperimentConfig.runs`): axes times fixed fields.

    Iterating gives the run dicts in grid order (the last axis fastest), each
    ``{**fixed, **one value of every axis}``.
    """

    axes: dict[str, tuple]  # run key -> values, in grid order
    fixed: dict[str, Any]  # every config field that is not swept, as plain JSON data
    swept: dict[str, str]  # run key -> the config field it sweeps

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(values) for values in self.axes.values())

    def __iter__(self) -> Iterator[dict]:
        for one in grid(**self.axes):
            yield {**self.fixed, **one}

    def __len__(self) -> int:
        return math.prod(self.shape)

    def measure(self, name: str, function: Callable[[dict], Any], options=None) -> Measured:
        """``function`` over every run, through :func:`sweep` (cache, progress, processes)."""
        return Measured(self, sweep(name, function, list(self), options))


@dataclass(frozen=True)
class Measured:
    """The results of a sweep, in the order of its :class:`Runs`."""

    runs: Runs
    results: list

    def table(self, key: str | Callable | None = None, **at) -> np.ndarray:
        """One number (or list) of every result, as an array indexed by the swept axes.

        ``key`` picks it from each result: a key of the result dict, a function of the
        result, or None for the result itself. ``at`` fixes axes to one value each
        (``method="batch"``); the array has the other axes, in grid order, followed by
        the shape of the picked value. Values that are lists with None in them give an
        object array (``.tolist()`` keeps the None).
        """
        unknown = sorted(set(at) - set(self.runs.axes))
        if unknown:
            raise KeyError(f"no axis {', '.join(unknown)}; the axes are {list(self.runs.axes)}")
        ranges = [
            [values.index(at[key])] if key in at else range(len(values))
            for key, values in self.runs.axes.items()
        ]
        shape = tuple(
            len(r) for key, r in zip(self.runs.axes, ranges, strict=True) if key not in at
        )
        strides = np.cumprod((1, *self.runs.shape[:0:-1]))[::-1]  # flat index of a grid point
        picked = [
            _pick(self.results[int(np.dot(index, strides))], key) for index in product(*ranges)
        ]
        values = np.asarray(picked)
        return values.reshape(shape + values.shape[1:])


def measure_together(
    name: str, function: Callable[[dict], Any], parts: Sequence[Runs], options=None
) -> list[Measured]:
    """``function`` over the runs of several sweeps in ONE :func:`sweep`; a Measured per part.

    For an experiment whose parts have different axes (e.g. each model at its own chosen
    learning rate): one sweep keeps every worker busy until the last run, where a sweep
    per part would wait for the slowest run of each part in turn.
    """
    results = sweep(name, function, [run for part in parts for run in part], options)
    measured, start = [], 0
    for part in parts:
        measured.append(Measured(part, results[start : start + len(part)]))
        start += len(part)
    return measured


def _pick(result, key):
    if key is None:
        return result
    return key(result) if callable(key) else result[key]


# ---------------------------------------------------------------------------
# The cached sweep
# ---------------------------------------------------------------------------


#: The environment variable naming a run cache for sweeps given no options (notebooks).
CACHE_ENVIRONMENT_VARIABLE = "NORMLAB_CACHE"


@dataclass(frozen=True)
class SweepOptions:
    """How :func:`sweep` runs: caching, progress bar, processes.

    Attributes
    ----------
    cache_dir : Path or None, default None
        Root of the per-run cache; a sweep named ``name`` keeps its runs in
        ``cache_dir / name``. None computes everything and stores nothing.
        The command line uses ``<out>/.cache``; a sweep given no options at all (as in
        the notebooks) uses the folder named by the environment variable
        ``NORMLAB_CACHE`` if it is set (:data:`CACHE_ENVIRONMENT_VARIABLE`).
    progress : bool, default True
        Show a progress bar: a widget in Jupyter, a tqdm bar on a terminal, nothing
        otherwise (see :func:`progress_display`).
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

    @classmethod
    def from_environment(cls) -> SweepOptions:
        """The options of a sweep given none: cached in ``$NORMLAB_CACHE`` if that is set.

        A notebook rerun, or a lesson's solutions after the lesson, then computes only the
        runs it has not computed before; the cache keys make a stale run impossible.
        """
        folder = os.environ.get(CACHE_ENVIRONMENT_VARIABLE, "")
        return cls(cache_dir=Path(folder) if folder else None)


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
        Small JSON-able dicts, e.g. from :meth:`ExperimentConfig.runs`.
    options : SweepOptions, optional
        Cache folder, progress bar, jobs, force. Default: no cache, one process.

    Returns
    -------
    list
        The results in the order of ``runs``. Each has been through JSON, so a
        result computed now and one loaded from the cache are identical.

    Each finished run is written at once to ``cache_dir/name/<key>.json``, with ``key``
    from :func:`cache_key`. The write is atomic, so an interrupted sweep (Ctrl-C) leaves
    only whole files, and the next call computes only the runs that are missing. With
    ``jobs > 1``, Ctrl-C stops the workers at once (their unfinished runs are dropped),
    and further Ctrl-C during that cleanup is ignored, before KeyboardInterrupt is raised.
    """
    options = options or SweepOptions.from_environment()
    if isinstance(run_one, functools.partial):
        raise TypeError(
            f"{name}: sweep takes a module-level function, not functools.partial: put the bound "
            "arguments into the run dicts, so that they are part of each run's cache key"
        )
    runs = [_plain(run) for run in runs]
    cache_folder = options.cache_dir / name if options.cache_dir is not None else None
    if cache_folder is not None:
        cache_folder.mkdir(parents=True, exist_ok=True)
        code = _code_identity(run_one)
        paths = [cache_folder / f"{cache_key(name, run, run_one, code)}.json" for run in runs]
    else:
        paths = [None] * len(runs)
    function_name = _function_name(run_one)

    results: list = [None] * len(runs)
    todo: list[int] = []
    for index, (run, path) in enumerate(zip(runs, paths, strict=True)):
        cached = None if options.force else _read_cached_run(path, name, function_name, run)
        if cached is None:
            todo.append(index)
        else:
            results[index] = cached["result"]

    with _progress_bar(
        options.progress, total=len(runs), done=len(runs) - len(todo), name=name
    ) as bar:
        tasks = [(run_one, name, runs[index], paths[index]) for index in todo]
        if options.jobs == 1 or len(todo) <= 1:
            for index, task in zip(todo, tasks, strict=True):
                results[index] = _compute_and_store(*task)
                bar.update()
        else:
            _compute_in_processes(tasks, todo, results, options.jobs, bar)
    return results


def _compute_in_processes(tasks, todo, results, jobs: int, bar) -> None:
    # "spawn" starts clean interpreters on every platform (no state inherited
    # through fork), so the worker results cannot depend on the parent process.
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(
        max_workers=min(jobs, len(todo)), mp_context=context, initializer=_ignore_ctrl_c
    )
    try:
        # Workers start while the futures are submitted; they inherit an ignored Ctrl-C,
        # so a Ctrl-C cannot reach one still importing (which would print a traceback).
        with ctrl_c_ignored():
            futures = {
                executor.submit(_compute_and_store, *task): index
                for task, index in zip(tasks, todo, strict=True)
            }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update()
    except BaseException:
        with ctrl_c_ignored():  # a second Ctrl-C during the cleanup changes nothing
            _stop_workers(executor)
        raise
    executor.shutdown()


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """End the workers now and drop the waiting runs (a run in progress is not cached).

    The workers are terminated first, so that the shutdown, which waits for the pool's
    manager thread, returns at once instead of at interpreter exit.
    """
    terminate = getattr(executor, "terminate_workers", None)  # Python ≥ 3.14
    if terminate is not None:
        terminate()
    else:
        for process in list((executor._processes or {}).values()):
            process.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


class ctrl_c_ignored:
    """A context manager: SIGINT (Ctrl-C) is ignored inside the block, then as before.

    Only the main thread can set signal handlers; elsewhere the block changes nothing.
    """

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _ignore_ctrl_c() -> None:
    """Workers leave Ctrl-C to the parent, which stops the sweep."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _compute_and_store(run_one, name: str, run: dict, path: Path | None):
    # One BLAS thread: the arrays of one run are small (more threads only add
    # overhead), and the order of a BLAS sum then cannot depend on the core count.
    with threadpool_limits(limits=1, user_api="blas"):
        result = _plain(run_one(run))
    if path is not None:
        record = {
            "experiment": name,
            "function": _function_name(run_one),
            "run": run,
            "result": result,
        }
        write_atomic(path, json.dumps(record, sort_keys=True, indent=1) + "\n")
    return result


def _read_cached_run(path: Path | None, name: str, function: str, run: dict) -> dict | None:
    """The cached record of ``run``, or None if absent, unreadable or not this run."""
    if path is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # e.g. edited by hand: recompute and overwrite
    if not isinstance(record, dict) or "result" not in record:
        return None
    if (record.get("experiment"), record.get("function"), record.get("run")) != (
        name,
        function,
        run,
    ):
        return None  # not this run (a hash collision would land here)
    return record


def _function_name(function: Callable) -> str:
    target = function if hasattr(function, "__qualname__") else type(function)
    return f"{target.__module__}.{target.__qualname__}"


def _code_identity(run_one: Callable) -> dict:
    """The code and library versions that a run's numbers depend on."""
    return {
        "code": code_hash(run_one),
        "numpy": np.__version__,
        "scikit-learn": _version("scikit-learn"),
        # The CPython text corpus and the float formatting of some functions come with it.
        "python": platform.python_version(),
    }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def cache_key(name: str, run: dict, run_one: Callable, code: dict | None = None) -> str:
    """The cache file name of one run: a hash of the experiment, the run and the code.

    ``code`` (computed from ``run_one`` if not given) is the hash of the code the
    measurement depends on (:func:`~normlab.experiments.dependencies.code_hash`) with the
    numpy, scikit-learn and Python versions, so stale numbers are never reused, while an
    edit elsewhere (a plot, another experiment, a comment) keeps every cached run.
    """
    identity = {
        "experiment": name,
        "function": _function_name(run_one),
        "run": _plain(run),
        **(code if code is not None else _code_identity(run_one)),
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


# ---------------------------------------------------------------------------
# Progress bar: a widget in Jupyter, tqdm on a terminal, nothing otherwise
# ---------------------------------------------------------------------------


def running_in_notebook() -> bool:
    """True inside a Jupyter kernel (notebook, JupyterLab, VS Code), not in a terminal IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_display(
    show: bool, *, in_notebook: bool | None = None, on_terminal: bool | None = None
) -> str | None:
    """Which progress bar a sweep shows: ``"notebook"``, ``"terminal"`` or None.

    A notebook gets its own bar (a terminal bar there prints nothing, since its stderr
    is not a terminal); a terminal gets tqdm's bar; anything else (a log file, a test)
    none. ``in_notebook`` and ``on_terminal`` default to the current process.
    """
    if not show:
        return None
    if in_notebook is None:
        in_notebook = running_in_notebook()
    if in_notebook:
        return "notebook"
    if on_terminal is None:
        on_terminal = sys.stderr.isatty()
    return "terminal" if on_terminal else None


def _progress_bar(show: bool, *, total: int, done: int, name: str):
    display = progress_display(show)
    options = {"total": total, "initial": done, "desc": name, "unit": "run"}
    if display == "notebook":
        try:
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm(**options)
        except ImportError:  # no ipywidgets: a text bar, which Jupyter redraws in place
            return tqdm(**options, file=sys.stderr)
    return tqdm(**options, file=sys.stderr, disable=display is None, dynamic_ncols=True)


# ---------------------------------------------------------------------------
# Strict, deterministic JSON
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


def _round_floats(value, digits: int, where: str = "results"):
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(
                f"{where} is {value}: results are strict JSON, which has no NaN or Infinity; "
                "store None (and say why) or refuse the config before it runs"
            )
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {
            key: _round_floats(item, digits, f"{where}[{key!r}]") for key, item in value.items()
        }
    if isinstance(value, list):
        return [_round_floats(item, digits, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def canonical(results, digits: int = RESULT_SIGNIFICANT_DIGITS):
    """``results`` as plain JSON data with floats rounded to ``digits`` significant digits.

    This is exactly what :func:`save_results` writes and :func:`load_results` reads
    back, so a figure drawn from ``canonical(results)`` is the same as one drawn from
    the saved file. A NaN or infinity anywhere is a ValueError naming where it is.
    """
    return _round_floats(_plain(results), digits)


def results_json(results) -> str:
    """The text of a results file: canonical numbers, sorted keys, one list of numbers a line.

    Strict JSON (no NaN or Infinity), laid out for reading and for small diffs: a dict
    puts each key on its own line, a list of plain values stays on one line, and a list
    of lists puts each inner list on its own line (a table reads as rows).
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
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


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
    ``experiment.plot(results)`` its figure, and, when ``experiment.has_slides``,
    ``experiment.slides(results)`` its lecture slides as ``(name, Figure)`` pairs.
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

        A field the Config does not have is a TypeError naming the fields it has. Sizes
        given unsorted or repeated are sorted and de-duplicated, with an
        :class:`ExperimentWarning` saying so.
        """
        config = self.config_class.quick() if quick else self.config_class()
        chosen = {name: value for name, value in overrides.items() if value is not None}
        unknown = sorted(set(chosen) - set(self.field_names))
        if unknown:
            raise TypeError(
                f"{self.name} has no config field {', '.join(unknown)}; "
                f"its fields are: {', '.join(self.field_names)}"
            )
        if not chosen:
            return config
        config, _, notes = apply_overrides(config, chosen)
        for note in notes:
            warnings.warn(f"{self.name}: {note}", ExperimentWarning, stacklevel=2)
        return config

    def run(self, config, options: SweepOptions | None = None):
        """The experiment's results (canonical), after warning about each of its concerns."""
        for concern in config.concerns():
            warnings.warn(f"{self.name}: {concern}", ExperimentWarning, stacklevel=2)
        return canonical(self.module.run(config, options))

    def plot(self, results):
        return self.module.plot(results)

    @property
    def has_slides(self) -> bool:
        """True when the module defines ``slides(results)`` (see the module docstring)."""
        return callable(getattr(self.module, "slides", None))

    def slides(self, results) -> list[tuple[str, Any]]:
        """The experiment's slides drawn from ``results``: ``(name, Figure)`` pairs, in order.

        Bare figures returned by the module are named ``"1"``, ``"2"``, ...; a name is
        lower-case letters, digits, ``_`` and ``-`` (it becomes part of a file name), and
        no two are the same. An experiment without slides is a TypeError saying so.
        """
        from matplotlib.figure import Figure

        if not self.has_slides:
            raise TypeError(
                f"{self.name} has no slides: its module defines no slides(results) function"
            )
        named = []
        for position, entry in enumerate(self.module.slides(results), start=1):
            name, figure = entry if isinstance(entry, tuple) else (str(position), entry)
            if not isinstance(figure, Figure):
                raise TypeError(
                    f"{self.name}.slides must return Figures or (name, Figure) pairs, "
                    f"got {type(figure).__name__} for slide {position}"
                )
            if not isinstance(name, str) or not _SLIDE_NAME.fullmatch(name):
                raise ValueError(
                    f"{self.name}: slide name {name!r} must be lower-case letters, digits, "
                    "'_' or '-' (it names a file)"
                )
            named.append((name, figure))
        names = [name for name, _ in named]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{self.name}: slide names repeat: {', '.join(repeated)}")
        return named
