"""The contract every registered experiment keeps, checked once for all of them.

Each experiment's quick config runs once per session (the ``quick_runs`` fixture of
``conftest.py``, shared with the science tests in ``test_exp_*.py``). Here: the module
has the recipe's shape; every config field is declared with a check that rejects bad
values; every field that a sweep does not sweep is in each of its runs (so in the cache
key); a run recomputed from scratch gives its cached numbers; the results are strict,
canonical JSON; the plot is a Figure whose caption fits the run.
"""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from normlab import experiments
from normlab.experiments.framework import ExperimentConfig, canonical, results_json

NAMES = experiments.names()


def config_fields(name: str) -> list[dataclasses.Field]:
    return list(dataclasses.fields(experiments.get(name).config_class))


def plain(value):
    return json.loads(json.dumps(value, default=dataclasses.asdict))


@pytest.mark.parametrize("name", NAMES)
def test_module_follows_the_recipe(name):
    experiment = experiments.get(name)
    module = experiment.module
    assert name == module.NAME
    assert experiment.description, "the module docstring's first line describes it"
    assert len(experiment.description) <= 100
    config_class = module.Config
    assert dataclasses.is_dataclass(config_class)
    assert config_class.__dataclass_params__.frozen
    assert issubclass(config_class, ExperimentConfig)
    assert config_class.quick() != config_class(), "quick() should be smaller than the default"
    assert callable(module.run)
    assert callable(module.plot)


@pytest.mark.parametrize("name", NAMES)
def test_docstring_says_what_would_refute_the_claim(name):
    assert "refute" in experiments.get(name).module.__doc__


@pytest.mark.parametrize("name", NAMES)
def test_every_field_declares_a_check_that_rejects_bad_values(name):
    config_class = experiments.get(name).config_class
    for field in config_fields(name):
        check = field.metadata.get("check")
        assert check is not None, f"{name}.Config.{field.name} is not declared with a check"
        for bad in check.invalid_examples():
            with pytest.raises(ValueError, match=field.name):
                config_class(**{field.name: bad})


#: The rules of each experiment's ``validate`` (relations between fields), with a config
#: that breaks each and a word of the message.
RELATIONAL_RULES = [
    ("accuracy_vs_batch_size", {"batch_sizes": (1, 2)}, "BatchNorm cannot train"),
    ("accuracy_vs_batch_size", {"batch_sizes": (2, 4096)}, "training images"),
    ("train_eval_gap", {"batch_sizes": (2, 4), "probe_batch_size": 32}, "probe_batch_size"),
    ("precise_bn", {"checkpoints": (25, 100), "probe_step": 50}, "probe_step"),
    ("test_time_shift", {"models": ("mlp",), "norms": ("instance",)}, "InstanceNorm"),
    ("frozen_batchnorm", {"subset_size": 8, "batch_sizes": (2, 16)}, "subset_size"),
    ("batch_coupling", {"num_features": 6}, "multiple of 4"),
    ("norm_axes", {"num_features": 6, "num_groups": 4}, "divide"),
    ("norm_axes", {"highlight": (0, 0, 99)}, "highlight"),
    ("norm_axes", {"image_shape": (2, 2, 2, 6), "image_num_groups": 4}, "divide"),
    ("norm_axes", {"image_shape": (2, 1, 1, 6)}, "2 positions"),
    ("statistics_batch", {"sgd_batch_size": 16}, "must end at"),
    ("statistics_batch", {"sgd_batch_size": 4096, "statistics_batch_sizes": (4096,)}, "training"),
    ("group_norm_curve", {"devices": 64}, "training images"),
    ("padding_stats", {"batch_size": 4, "seq_len": 2, "padding_fractions": (0.9,)}, "real tokens"),
    ("length_generalization", {"train_min_len": 17}, "train_min_len"),
    ("length_drift", {"train_len": 32, "test_len": 16}, "test_len"),
    ("lm_norms", {"context_length": 64, "test_context_length": 32}, "test_context_length"),
    ("lm_norms", {"d_model": 30, "num_heads": 4}, "num_heads must divide"),
    ("lm_batch_composition", {"min_length": 64, "context_length": 32}, "min_length"),
    ("rms_vs_layernorm", {"scale_factor": 1.0}, "scale_factor"),
    ("learning_rate_maps", {"init_scales": (0.01, 0.1)}, "init_scales must contain 1"),
    ("learning_rate_maps", {"batch_size": 2000}, "batch_size"),
    ("loss_landscape", {"steps": 10, "probe_every": 20}, "probe_every"),
    ("effective_learning_rate", {"steps": 40, "record_every": 20}, "record_every"),
]


@pytest.mark.parametrize(("name", "fields", "message"), RELATIONAL_RULES)
def test_configs_that_break_a_rule_between_fields_cannot_be_built(name, fields, message):
    with pytest.raises(ValueError, match=message):
        experiments.get(name).config_class(**fields)


def test_batch_size_one_is_fine_where_no_batchnorm_trains():
    config_class = experiments.get("accuracy_vs_batch_size").config_class
    assert config_class(norms=("layer",), batch_sizes=(1, 2)).batch_sizes == (1, 2)


@pytest.mark.parametrize("name", NAMES)
def test_every_field_not_swept_is_in_each_run(quick_runs, name):
    config = experiments.get(name).config(quick=True)
    field_names = {field.name for field in config_fields(name)}
    records = quick_runs.records(name)
    assert records, "the quick config cached no run"
    for record in records:
        run = record["run"]
        axes = {key: value for key, value in run.items() if key not in field_names}
        for field in field_names:
            value = plain(getattr(config, field))
            if field in run:
                assert run[field] == value, f"{field} in a run differs from the config"
            else:  # swept: one of its values sits under an axis key
                assert isinstance(value, list) and any(v in value for v in axes.values()), (
                    f"{name}: config field {field} is neither in the run {sorted(run)} "
                    "nor swept by it"
                )


@pytest.mark.parametrize("name", NAMES)
def test_a_run_recomputed_from_scratch_gives_its_cached_numbers(quick_runs, name):
    first = quick_runs.records(name)[0]
    module_name, function_name = first["function"].rsplit(".", 1)
    function = getattr(importlib.import_module(module_name), function_name)
    with threadpool_limits(limits=1, user_api="blas"):  # as sweep computes every run
        recomputed = function(first["run"])
    assert canonical(recomputed) == canonical(first["result"])


@pytest.mark.parametrize("name", NAMES)
def test_a_rerun_loads_every_run_and_gives_the_same_results(quick_runs, name):
    experiment = experiments.get(name)
    again = experiment.run(experiment.config(quick=True), quick_runs.options())
    assert again == quick_runs.results(name)


def _reject_constant(constant: str):
    raise ValueError(f"{constant} is not strict JSON")


@pytest.mark.parametrize("name", NAMES)
def test_results_are_strict_canonical_json(quick_runs, name):
    results = quick_runs.results(name)
    assert results == canonical(results)
    text = results_json(results)
    assert json.loads(text, parse_constant=_reject_constant) == results
    assert results["config"] == plain(experiments.get(name).config(quick=True))


@pytest.mark.parametrize("name", NAMES)
def test_plot_returns_a_figure_with_a_caption_that_fits_the_run(quick_runs, name):
    figure = experiments.get(name).plot(quick_runs.results(name))
    assert isinstance(figure, Figure)
    assert figure.axes
    caption = f"{figure.get_suptitle()} {figure.get_supxlabel()}"
    assert "1 seeds" not in caption
