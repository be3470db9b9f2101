"""Caches recompute only what changed: the code half of every cache key.

An experiment's cached runs depend on the definitions its measurement reaches in its own
module and on the normlab modules that code imports, as code: not on comments,
docstrings, plots, the command line or other experiments. Checked on a temporary copy of
the package, through the hash itself and end to end through ``python -m normlab``.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from normlab.experiments import (
    accuracy_vs_batch_size,
    batch_stat_noise,
    dependencies,
    running_stats,
    variance_numerics,
)
from normlab.experiments.dependencies import code_hash

PACKAGE = Path(__file__).resolve().parents[1] / "normlab"
MEASUREMENTS = {
    "variance_numerics": variance_numerics.measure_one,
    "running_stats": running_stats.measure_one,
}


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of the normlab sources to edit (nothing of it is imported in this process)."""
    copy = tmp_path / "normlab"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def hashes(package_dir: Path) -> dict[str, str]:
    return {name: code_hash(function, package_dir) for name, function in MEASUREMENTS.items()}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def test_a_comment_a_docstring_or_a_plot_of_one_experiment_recomputes_nothing(package):
    before = hashes(package)
    module = package / "experiments" / "running_stats.py"
    append(module, "\n# a comment at the end of the module\n")
    edit(module, '"""2×3: one run\'s trajectories', '"""Two rows: one run\'s trajectories')
    edit(module, 'ax.set_xlabel("momentum")', 'ax.set_xlabel("BatchNorm momentum")')  # plot code
    edit(module, "        layer(batches[step])\n", "        layer(batches[step])  # one step\n")
    assert hashes(package) == before


def test_another_experiment_plotting_and_the_command_line_are_not_dependencies(package):
    before = hashes(package)
    append(package / "experiments" / "batch_stat_noise.py", "\nSOMETHING_NEW = 1\n")
    append(package / "plotting.py", "\nDPI = 300\n")
    append(package / "cli.py", "\nEXIT_OK = 0\n")
    edit(  # registering another experiment
        package / "experiments" / "__init__.py",
        '    "variance_numerics",\n',
        '    "variance_numerics",\n    "another_experiment",\n',
    )
    assert hashes(package) == before


def test_editing_the_measurement_recomputes_only_its_experiment(package):
    before = hashes(package)
    module = package / "experiments" / "running_stats.py"
    edit(
        module,
        'rng = np.random.default_rng(run["seed"])',
        'rng = np.random.default_rng(run["seed"] + 1)',
    )
    after = hashes(package)
    assert after["running_stats"] != before["running_stats"]
    assert after["variance_numerics"] == before["variance_numerics"]


def test_editing_a_constant_the_measurement_reads_recomputes_it(package):
    before = code_hash(running_stats.measure_one, package)
    edit(
        package / "experiments" / "running_stats.py",
        "NUM_RECORDED_STEPS = 60",
        "NUM_RECORDED_STEPS = 61",
    )
    assert code_hash(running_stats.measure_one, package) != before


def test_editing_the_core_recomputes_every_experiment_that_normalizes(package):
    before = hashes(package)
    edit(
        package / "functional.py",
        "    divisor = _divisor(count, x.dtype)\n",
        "    divisor = _divisor(count, x.dtype) * 1\n",
    )
    after = hashes(package)
    assert all(after[name] != before[name] for name in MEASUREMENTS)


def test_dependencies_are_the_modules_the_measurement_imports():
    assert dependencies.dependencies(variance_numerics.measure_one) == [
        "normlab._fastsum",
        "normlab.functional",
        "normlab.module",  # the argument checks (check_axes)
    ]
    training_run = dependencies.dependencies(accuracy_vs_batch_size.measure_one)
    assert {"normlab.training", "normlab.nn", "normlab.data", "normlab.layers"} <= set(training_run)
    for measured in (batch_stat_noise.measure_one, accuracy_vs_batch_size.measure_one):
        assert not set(dependencies.dependencies(measured)) & dependencies.PRESENTATION_MODULES
        assert "normlab.experiments.framework" not in dependencies.dependencies(measured)


def test_names_bound_inside_a_function_are_not_module_dependencies():
    tree = ast.parse(
        "def run(config): ...\n"
        "def helper(x): return x\n"
        "def measure(run):\n"
        "    total = helper(run['seed'])\n"
        "    return [run for run in range(total)]\n"
    )
    reached, _ = dependencies.reached_names(tree, ["measure"])
    assert [statement.name for statement in reached] == ["helper", "measure"]


def run_figures(root: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", "normlab", "figures", "--quick"]
    command += ["--only", "variance_numerics", "running_stats", "--formats", "png"]
    completed = subprocess.run(
        [*command, "--out", str(out)], cwd=root, env=env, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    return completed


def cached_runs(out: Path) -> dict[str, set[str]]:
    return {
        name: {path.name for path in (out / ".cache" / name).iterdir()} for name in MEASUREMENTS
    }


def test_rerunning_the_command_after_edits_recomputes_only_what_changed(package, tmp_path):
    out = tmp_path / "figures"
    probe = subprocess.run(
        [sys.executable, "-c", "import normlab; print(normlab.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert probe.stdout.strip() == str(package / "__init__.py")  # the copy runs, not the checkout
    run_figures(tmp_path, out)
    first = cached_runs(out)

    module = package / "experiments" / "running_stats.py"
    append(module, "\n# a comment appended to running_stats.py\n")
    edit(module, 'ax.set_xlabel("momentum")', 'ax.set_xlabel("BatchNorm momentum")')
    run_figures(tmp_path, out)
    assert cached_runs(out) == first  # neither experiment recomputed a run

    edit(
        package / "functional.py",
        "    divisor = _divisor(count, x.dtype)\n",
        "    divisor = _divisor(count, x.dtype) * 1\n",
    )
    run_figures(tmp_path, out)
    after_core_edit = cached_runs(out)
    for name in MEASUREMENTS:  # every run of both computed again, under new keys
        assert len(after_core_edit[name]) == 2 * len(first[name])
