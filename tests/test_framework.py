"""The experiment framework: configs, grid, the cached sweep, deterministic JSON, the registry."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from normlab import experiments
from normlab.experiments import framework, variance_numerics
from normlab.experiments.framework import ExperimentConfig, SweepOptions, grid, sweep

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


# ---------------------------------------------------------------------------
# grid
# ---------------------------------------------------------------------------


def test_grid_varies_the_last_axis_fastest():
    runs = grid(method=["batch", "layer"], batch_size=[2, 4, 8])
    assert len(runs) == 6
    assert runs[0] == {"method": "batch", "batch_size": 2}
    assert runs[1] == {"method": "batch", "batch_size": 4}
    assert runs[3] == {"method": "layer", "batch_size": 2}
    values = np.reshape([run["batch_size"] for run in runs], (2, 3))
    assert values[:, 0].tolist() == [2, 2]  # the reshape recovers the table


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
    assert set(record) == {"experiment", "run", "result"}

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


def test_a_change_in_the_source_code_invalidates_the_cache(tmp_path, monkeypatch):
    options = SweepOptions(cache_dir=tmp_path)
    sweep(NAME, CountingRun(), RUNS, options)
    monkeypatch.setattr(framework, "source_hash", lambda: "edited layers.py")
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


def test_cache_key_depends_on_experiment_and_run_only():
    run = {"seed": 0, "batch_size": 4}
    assert framework.cache_key("a", run) == framework.cache_key("a", dict(reversed(run.items())))
    assert framework.cache_key("a", run) != framework.cache_key("b", run)
    assert framework.cache_key("a", run) != framework.cache_key("a", {**run, "seed": 1})


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


def test_sweep_options_reject_zero_jobs():
    with pytest.raises(ValueError, match="jobs"):
        SweepOptions(jobs=0)


# ---------------------------------------------------------------------------
# Deterministic JSON
# ---------------------------------------------------------------------------


def test_results_json_is_canonical():
    results = {"b": 0.1 + 0.2, "a": np.float32(1.5), "c": (1, 2), "d": np.array([1.0 / 3])}
    text = framework.results_json(results)
    assert text == framework.results_json(dict(reversed(results.items())))  # key order ignored
    assert list(json.loads(text)) == ["a", "b", "c", "d"]
    assert '"b": 0.3' in text  # 0.30000000000000004 rounded to 10 significant digits
    assert json.loads(text)["d"] == [0.3333333333]
    assert text.endswith("}\n")


def test_saved_results_load_back_as_canonical(tmp_path):
    results = {"errors": [np.float64(2.0) / 3, 1e-300], "seeds": (0, 1)}
    path = framework.save_results(tmp_path / "x.json", results)
    assert framework.load_results(path) == framework.canonical(results)
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left


# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainsBatchNorm(ExperimentConfig):
    batch_sizes: tuple[int, ...] = (2, 4)
    seeds: tuple[int, ...] = (0, 1)

    @classmethod
    def quick(cls) -> TrainsBatchNorm:
        return cls(batch_sizes=(2,), seeds=(0,))

    def validate(self) -> None:
        super().validate()
        if min(self.batch_sizes) < 2:
            raise ValueError("batch size 1 cannot train BatchNorm; use batch sizes ≥ 2")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_sizes": (0, 4)}, "≥ 1"),
        ({"batch_sizes": ()}, "non-empty"),
        ({"batch_sizes": (2.5,)}, "integers"),
        ({"seeds": (-1,)}, "≥ 0"),
        ({"batch_sizes": (1, 4)}, "BatchNorm"),  # the experiment's own validate()
    ],
)
def test_invalid_configs_cannot_be_built(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainsBatchNorm(**fields)


def test_overrides_apply_to_the_fields_a_config_has():
    config, ignored = framework.apply_overrides(
        TrainsBatchNorm(), {"batch_sizes": (8, 16), "seq_lens": (10,), "seeds": (0, 1, 2)}
    )
    assert config == TrainsBatchNorm(batch_sizes=(8, 16), seeds=(0, 1, 2))
    assert ignored == ["seq_lens"]
    with pytest.raises(ValueError, match="BatchNorm"):
        framework.apply_overrides(TrainsBatchNorm(), {"batch_sizes": (1,)})


# ---------------------------------------------------------------------------
# Registry: every registered experiment has the shape the CLI relies on
# ---------------------------------------------------------------------------


def test_registry_lists_the_modules_by_name():
    assert experiments.names() == experiments.REGISTRY
    assert len(set(experiments.REGISTRY)) == len(experiments.REGISTRY)


def test_an_unknown_name_suggests_close_ones():
    with pytest.raises(
        experiments.UnknownExperimentError, match="did you mean 'variance_numerics'"
    ):
        experiments.get("varience_numerics")


@pytest.mark.parametrize("name", experiments.names())
def test_registered_experiment_follows_the_recipe(name):
    experiment = experiments.get(name)
    module = experiment.module
    assert name == module.NAME
    assert experiment.description, "the module docstring's first line describes it"
    assert len(experiment.description) <= 100
    config_class = module.Config
    assert dataclasses.is_dataclass(config_class)
    assert config_class.__dataclass_params__.frozen
    assert issubclass(config_class, ExperimentConfig)
    assert isinstance(config_class(), config_class)
    assert isinstance(config_class.quick(), config_class)
    assert config_class.quick() != config_class(), "quick() should be smaller than the default"
    assert callable(module.run)
    assert callable(module.plot)
