"""The experiment framework: declared fields, runs and tables, the cached sweep, strict JSON."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings

import numpy as np
import pytest

from normlab import experiments
from normlab.experiments import framework, variance_numerics
from normlab.experiments.framework import (
    CACHE_ENVIRONMENT_VARIABLE,
    ExperimentConfig,
    ExperimentWarning,
    SweepOptions,
    choices,
    grid,
    integer,
    integers,
    number,
    numbers,
    seeds,
    sweep,
)

NAME = "toy"
RUNS = grid(scale=[1, 2, 3], seed=[0, 1])  # 6 runs


class CountingRun:
    """A ``run_one`` that counts its calls and can stop like Ctrl-C after ``interrupt_after``."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls = 0
        self.interrupt_after = interrupt_after

    def __call__(self, run: dict) -> dict:
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls += 1
        rng = np.random.default_rng(run["seed"])
        return {"value": run["scale"] * rng.standard_normal(), "steps": np.arange(run["scale"])}


def cache_files(cache_root, name: str = NAME) -> list:
    return sorted((cache_root / name).iterdir())


@dataclasses.dataclass(frozen=True)
class Toy(ExperimentConfig):
    """A config with one field of every kind."""

    batch_sizes: tuple[int, ...] = integers((2, 4), minimum=2, why="BatchNorm needs two")
    seeds: tuple[int, ...] = seeds(2)
    rate: float = number(0.5, above=0, maximum=1)
    steps: int = integer(10, minimum=1)
    methods: tuple[str, ...] = choices(("batch", "layer"), ("batch", "layer", "rms"))
    momenta: tuple[float | None, ...] = numbers((0.1, None), above=0, maximum=1, allow_none=True)

    @classmethod
    def quick(cls) -> Toy:
        return cls(batch_sizes=(2,), seeds=(0,))


# ---------------------------------------------------------------------------
# Declared fields
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_sizes": (1, 4)}, r"batch_sizes must all be ≥ 2 \(BatchNorm needs two\), got 1"),
        ({"batch_sizes": ()}, "non-empty tuple of integers"),
        ({"batch_sizes": (2.5,)}, "must contain only an integer"),
        ({"seeds": (-1,)}, "seeds must all be ≥ 0"),
        ({"rate": 0.0}, r"rate must be in \(0, 1\]"),
        ({"rate": math.nan}, "rate must be finite"),
        ({"steps": True}, "steps must be an integer"),
        ({"methods": ("group",)}, "unknown 'group'; choose from"),
        ({"methods": ("batch", "batch")}, "must not repeat"),
        ({"momenta": (0.1, 2.0)}, "momenta must all be in"),
    ],
)
def test_a_field_outside_its_declaration_cannot_be_built(fields, message):
    with pytest.raises(ValueError, match=message):
        Toy(**fields)


def test_sizes_are_sorted_and_repeats_dropped():
    assert Toy(batch_sizes=(16, 4, 8, 4)).batch_sizes == (4, 8, 16)
    assert Toy(seeds=(2, 0, 2)).seeds == (0, 2)
    assert Toy(momenta=(0.5, None, 0.5)).momenta == (0.5, None)  # order kept: not sizes
    config = dataclasses.replace(Toy(), batch_sizes=[8, 2])
    assert config.batch_sizes == (2, 8)


def test_overrides_apply_to_the_fields_a_config_has_and_say_what_they_sorted():
    config, ignored, notes = framework.apply_overrides(
        Toy(), {"batch_sizes": (16, 4, 8, 4), "seq_lens": (10,), "seeds": (0, 1, 2)}
    )
    assert config == Toy(batch_sizes=(4, 8, 16), seeds=(0, 1, 2))
    assert ignored == ["seq_lens"]
    assert notes == ["batch_sizes 16 4 8 4 sorted and without repeats: 4 8 16"]
    with pytest.raises(ValueError, match="batch_sizes"):
        framework.apply_overrides(Toy(), {"batch_sizes": (1,)})


def test_experiment_config_warns_when_it_sorts():
    experiment = experiments.get("batch_stat_noise")
    with pytest.warns(ExperimentWarning, match="sorted"):
        config = experiment.config(quick=True, batch_sizes=(32, 2, 8, 2))
    assert config.batch_sizes == (2, 8, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiment.config(quick=True, batch_sizes=(2, 8))  # already sorted: silent


# ---------------------------------------------------------------------------
# Runs and tables
# ---------------------------------------------------------------------------


def test_grid_varies_the_last_axis_fastest():
    runs = grid(method=["batch", "layer"], batch_size=[2, 4, 8])
    assert len(runs) == 6
    assert runs[0] == {"method": "batch", "batch_size": 2}
    assert runs[1] == {"method": "batch", "batch_size": 4}
    assert runs[3] == {"method": "layer", "batch_size": 2}


def test_every_field_that_is_not_swept_enters_each_run():
    runs = Toy().runs(batch_size="batch_sizes", seed="seeds", part=("one",))
    assert runs.shape == (2, 2, 1)
    first = next(iter(runs))
    assert first == {
        "batch_size": 2,
        "seed": 0,
        "part": "one",
        "rate": 0.5,
        "steps": 10,
        "methods": ["batch", "layer"],
        "momenta": [0.1, None],
    }
    assert len(list(runs)) == len(runs) == 4


def test_an_axis_named_like_a_field_is_refused():
    with pytest.raises(ValueError, match="name of a config field"):
        Toy().runs(steps="batch_sizes")
    with pytest.raises(ValueError, match="no field"):
        Toy().runs(batch_size="batch_size")


def square_plus_seed(run: dict) -> dict:
    return {"value": run["batch_size"] ** 2 + run["seed"], "pair": [run["seed"], run["steps"]]}


def test_measured_tables_are_indexed_by_the_axes():
    measured = Toy().runs(batch_size="batch_sizes", seed="seeds").measure(NAME, square_plus_seed)
    assert measured.table("value").tolist() == [[4, 5], [16, 17]]  # (batch sizes, seeds)
    assert measured.table("value", seed=1).tolist() == [5, 17]
    assert measured.table("pair", batch_size=4).shape == (2, 2)  # (seeds, the pair)
    assert measured.table(lambda one: one["value"] % 2, batch_size=2).tolist() == [0, 1]
    with pytest.raises(KeyError, match="no axis"):
        measured.table("value", method="batch")


def test_parts_measured_together_come_back_each_with_its_own_axes():
    config = Toy()
    first = config.runs(batch_size="batch_sizes", seed="seeds")
    second = config.runs(seed="seeds", batch_size=(8,))
    together = framework.measure_together(NAME, square_plus_seed, [first, second])
    assert together[0].table("value").tolist() == [[4, 5], [16, 17]]
    assert together[1].table("value").tolist() == [[64], [65]]  # (seeds, batch sizes)


# ---------------------------------------------------------------------------
# sweep: cache, resume, force, processes
# ---------------------------------------------------------------------------


def test_sweep_without_cache_is_a_map_through_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_one = CountingRun()
    results = sweep(NAME, run_one, RUNS)
    assert run_one.calls == len(RUNS)
    assert results[3]["steps"] == [0, 1]  # numpy array came back as a list
    assert isinstance(results[3]["value"], float)
    assert list(tmp_path.iterdir()) == []  # no cache folder means no files


def test_sweep_caches_each_run_in_its_own_file_and_reloads_it(tmp_path):
    options = SweepOptions(cache_dir=tmp_path)
    first = CountingRun()
    computed = sweep(NAME, first, RUNS, options)
    assert first.calls == len(RUNS)
    files = cache_files(tmp_path)
    assert len(files) == len(RUNS)
    assert all(path.suffix == ".json" for path in files)  # no temporary files left
    record = json.loads(files[0].read_text())
    assert set(record) == {"experiment", "function", "run", "result"}
    assert record["function"] == "test_framework.CountingRun"

    second = CountingRun()
    loaded = sweep(NAME, second, RUNS, options)
    assert second.calls == 0
    assert loaded == computed


def test_interrupted_sweep_keeps_finished_runs_and_resumes(tmp_path):
    options = SweepOptions(cache_dir=tmp_path / "cache")
    interrupted = CountingRun(interrupt_after=4)
    with pytest.raises(KeyboardInterrupt):
        sweep(NAME, interrupted, RUNS, options)
    assert len(cache_files(tmp_path / "cache")) == 4

    resumed = CountingRun()
    results = sweep(NAME, resumed, RUNS, options)
    assert resumed.calls == len(RUNS) - 4  # only the missing runs
    uninterrupted = sweep(NAME, CountingRun(), RUNS, SweepOptions(cache_dir=tmp_path / "fresh"))
    assert results == uninterrupted


def test_force_recomputes_every_run(tmp_path):
    sweep(NAME, CountingRun(), RUNS, SweepOptions(cache_dir=tmp_path))
    forced = CountingRun()
    sweep(NAME, forced, RUNS, SweepOptions(cache_dir=tmp_path, force=True))
    assert forced.calls == len(RUNS)
    assert len(cache_files(tmp_path)) == len(RUNS)  # overwritten, not duplicated


def test_a_change_in_the_code_the_measurement_uses_invalidates_the_cache(tmp_path, monkeypatch):
    options = SweepOptions(cache_dir=tmp_path)
    sweep(NAME, CountingRun(), RUNS, options)
    monkeypatch.setattr(framework, "code_hash", lambda function: "edited functional.py")
    after_edit = CountingRun()
    sweep(NAME, after_edit, RUNS, options)
    assert after_edit.calls == len(RUNS)


def test_an_unreadable_cache_file_is_recomputed(tmp_path):
    options = SweepOptions(cache_dir=tmp_path)
    sweep(NAME, CountingRun(), RUNS, options)
    cache_files(tmp_path)[0].write_text("{ not json")
    repair = CountingRun()
    sweep(NAME, repair, RUNS, options)
    assert repair.calls == 1


def test_cache_key_depends_on_experiment_run_and_function():
    run = {"seed": 0, "batch_size": 4}
    key = framework.cache_key
    same_run_reordered = dict(reversed(run.items()))
    assert key("a", run, square_plus_seed) == key("a", same_run_reordered, square_plus_seed)
    assert key("a", run, square_plus_seed) != key("b", run, square_plus_seed)
    assert key("a", run, square_plus_seed) != key("a", {**run, "seed": 1}, square_plus_seed)
    assert key("a", run, square_plus_seed) != key("a", run, CountingRun())


def test_processes_give_the_same_results_and_files_as_one(tmp_path):
    runs = grid(ratio=[1.0, 1e3, 1e5], seed=[0, 1])
    for run in runs:
        run["sample_size"] = 256
    serial = sweep("vn", variance_numerics.measure_one, runs, SweepOptions(tmp_path / "one"))
    parallel = sweep(
        "vn", variance_numerics.measure_one, runs, SweepOptions(tmp_path / "two", jobs=2)
    )
    assert parallel == serial
    one, two = cache_files(tmp_path / "one", "vn"), cache_files(tmp_path / "two", "vn")
    assert [path.name for path in one] == [path.name for path in two]
    assert [path.read_bytes() for path in one] == [path.read_bytes() for path in two]


def test_a_partial_is_refused_because_its_arguments_would_miss_the_cache_key():
    with pytest.raises(TypeError, match="run dicts"):
        sweep(NAME, functools.partial(square_plus_seed), RUNS)


def test_sweep_options_reject_zero_jobs():
    with pytest.raises(ValueError, match="jobs"):
        SweepOptions(jobs=0)


# ---------------------------------------------------------------------------
# Progress bar: a notebook gets its own, a terminal tqdm's, anything else none
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("show", "in_notebook", "on_terminal", "expected"),
    [
        (True, True, False, "notebook"),  # a Jupyter kernel: stderr is no terminal
        (True, True, True, "notebook"),
        (True, False, True, "terminal"),
        (True, False, False, None),  # a log file, a test, CI
        (False, True, True, None),
    ],
)
def test_progress_bar_follows_where_it_is_shown(show, in_notebook, on_terminal, expected):
    shown = framework.progress_display(show, in_notebook=in_notebook, on_terminal=on_terminal)
    assert shown == expected


def test_tests_run_outside_a_notebook():
    assert not framework.running_in_notebook()


def test_the_notebook_bar_is_the_widget(monkeypatch):
    monkeypatch.setattr(framework, "running_in_notebook", lambda: True)
    bar = framework._progress_bar(True, total=3, done=1, name=NAME)
    try:
        assert type(bar).__module__ == "tqdm.notebook"
    finally:
        bar.close()


# ---------------------------------------------------------------------------
# Strict, deterministic JSON
# ---------------------------------------------------------------------------


def test_results_json_is_canonical():
    results = {"b": 0.1 + 0.2, "a": np.float32(1.5), "c": (1, 2), "d": np.array([1.0 / 3])}
    text = framework.results_json(results)
    assert text == framework.results_json(dict(reversed(results.items())))  # key order ignored
    assert list(json.loads(text)) == ["a", "b", "c", "d"]
    assert '"b": 0.3' in text  # 0.30000000000000004 rounded to 10 significant digits
    assert json.loads(text)["d"] == [0.3333333333]
    assert text.endswith("}\n")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_results_with_nan_or_infinity_are_refused_naming_where(tmp_path, value):
    results = {"headline": {"slope": [1.0, value]}}
    with pytest.raises(ValueError, match=r"results\['headline'\]\['slope'\]\[1\] is .*None"):
        framework.results_json(results)
    with pytest.raises(ValueError, match="strict JSON"):
        framework.save_results(tmp_path / "x.json", results)
    assert not (tmp_path / "x.json").exists()


def test_saved_results_load_back_as_canonical(tmp_path):
    results = {"errors": [np.float64(2.0) / 3, 1e-300], "seeds": (0, 1), "undefined": None}
    path = framework.save_results(tmp_path / "x.json", results)
    assert framework.load_results(path) == framework.canonical(results)
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def test_registry_lists_the_modules_by_name():
    assert experiments.names() == experiments.REGISTRY
    assert len(set(experiments.REGISTRY)) == len(experiments.REGISTRY)


def test_an_unknown_name_suggests_close_ones():
    with pytest.raises(
        experiments.UnknownExperimentError, match="did you mean 'variance_numerics'"
    ):
        experiments.get("varience_numerics")


#: The values ``_recorded_square`` was called with (module level: sweep takes only
#: module-level functions).
SQUARED: list[int] = []


def _recorded_square(run):
    SQUARED.append(run["value"])
    return run["value"] ** 2


def test_a_sweep_without_options_caches_in_the_folder_normlab_cache_names(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENVIRONMENT_VARIABLE, raising=False)
    assert SweepOptions.from_environment().cache_dir is None
    monkeypatch.setenv(CACHE_ENVIRONMENT_VARIABLE, str(tmp_path))
    SQUARED.clear()
    runs = [{"value": 1}, {"value": 2}]
    first = sweep("environment", _recorded_square, runs)
    assert len(list((tmp_path / "environment").glob("*.json"))) == 2
    again = sweep("environment", _recorded_square, runs)
    assert first == again == [1, 4]
    assert SQUARED == [1, 2]  # the second sweep read both runs from the cache
