"""The command line: list, figures (files, determinism, cache, resume) and every input error.

Most tests call :func:`normlab.cli.main` in-process (fast); two run ``python -m normlab``
in a subprocess, as a user would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from normlab import experiments
from normlab.cli import build_parser, main, plan_figures
from normlab.experiments import variance_numerics
from normlab.experiments.framework import ExperimentConfig, integers

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICK = ["figures", "--quick", "--only", "variance_numerics"]
QUICK_RUNS = len(variance_numerics.Config.quick().mean_to_std_ratios) * len(
    variance_numerics.Config.quick().seeds
)


def user_environment() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def run_module(*args: str) -> subprocess.CompletedProcess:
    """``python -m normlab ARGS`` with this checkout importable, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "normlab", *args],
        capture_output=True,
        text=True,
        env=user_environment(),
    )


def plan(*arguments: str):
    """What ``python -m normlab ARGS`` would do, checked, without running anything."""
    args = build_parser().parse_args(list(arguments))
    return plan_figures(args, [args.name] if args.command == "run" else args.only)


@pytest.fixture
def count_runs(monkeypatch):
    """Count the calls of variance_numerics.measure_one; ``counter.fail_after = k`` fakes Ctrl-C."""
    counter = types.SimpleNamespace(calls=0, fail_after=None)
    measure = variance_numerics.measure_one

    def counting(run):
        if counter.fail_after is not None and counter.calls >= counter.fail_after:
            raise KeyboardInterrupt
        counter.calls += 1
        return measure(run)

    monkeypatch.setattr(variance_numerics, "measure_one", counting)
    return counter


# ---------------------------------------------------------------------------
# list
# ---------------------------------------------------------------------------


def test_list_prints_each_experiment_on_one_line(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(experiments.names())
    for name, line in zip(experiments.names(), lines, strict=True):
        assert line.startswith(name)
        assert experiments.get(name).description in line
    assert "[--seeds]" in lines[experiments.names().index("variance_numerics")]


def test_python_dash_m_normlab_list():
    completed = run_module("list")
    assert completed.returncode == 0, completed.stderr
    assert "variance_numerics" in completed.stdout


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------


def test_quick_figure_writes_figures_numbers_and_cache(tmp_path, capsys):
    out = tmp_path / "figures"
    assert main([*QUICK, "--out", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == [
        ".cache",
        "variance_numerics.json",
        "variance_numerics.png",
        "variance_numerics.svg",
    ]
    assert len(list((out / ".cache" / "variance_numerics").iterdir())) == QUICK_RUNS
    results = json.loads((out / "variance_numerics.json").read_text())
    assert results["config"] == json.loads(json.dumps(variance_numerics.Config.quick().to_dict()))
    summary = capsys.readouterr().out
    assert "wrote 1 figure" in summary
    assert str(out / "variance_numerics.png") in summary
    assert str(out / ".cache") in summary


def test_same_command_gives_byte_identical_files_in_another_process(tmp_path):
    formats = ["--formats", "png", "svg", "pdf"]
    assert main([*QUICK, *formats, "--out", str(tmp_path / "here")]) == 0
    completed = run_module(*QUICK, *formats, "--out", str(tmp_path / "there"))
    assert completed.returncode == 0, completed.stderr
    for suffix in ("png", "svg", "pdf", "json"):
        here = (tmp_path / "here" / f"variance_numerics.{suffix}").read_bytes()
        there = (tmp_path / "there" / f"variance_numerics.{suffix}").read_bytes()
        assert here == there, f"{suffix} differs"


def test_rerun_loads_cached_runs_and_force_recomputes(tmp_path, count_runs):
    out = str(tmp_path)
    assert main([*QUICK, "--out", out]) == 0
    assert count_runs.calls == QUICK_RUNS
    assert main([*QUICK, "--out", out]) == 0
    assert count_runs.calls == QUICK_RUNS  # nothing recomputed
    assert main([*QUICK, "--out", out, "--force"]) == 0
    assert count_runs.calls == 2 * QUICK_RUNS


def test_ctrl_c_keeps_finished_runs_and_the_same_command_resumes(tmp_path, capsys, count_runs):
    count_runs.fail_after = 5
    assert main([*QUICK, "--out", str(tmp_path)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert len(list((tmp_path / ".cache" / "variance_numerics").iterdir())) == 5
    assert not (tmp_path / "variance_numerics.png").exists()

    count_runs.fail_after = None
    assert main([*QUICK, "--out", str(tmp_path)]) == 0
    assert count_runs.calls == QUICK_RUNS  # 5 before the interrupt, the rest after


def test_overrides_change_the_config_or_are_noted(tmp_path, capsys):
    assert main([*QUICK, "--seeds", "2", "--batch-sizes", "2", "4", "--out", str(tmp_path)]) == 0
    assert "--batch-sizes does not apply to variance_numerics" in capsys.readouterr().err
    results = json.loads((tmp_path / "variance_numerics.json").read_text())
    assert results["config"]["seeds"] == [0, 1]


def test_without_out_only_the_default_configuration_writes_to_figures(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(QUICK) == 0
    assert (tmp_path / "figures-quick" / "variance_numerics.png").is_file()
    assert "files go to figures-quick/" in capsys.readouterr().err
    assert main(["figures", "--only", "variance_numerics", "--seeds", "2"]) == 0
    assert (tmp_path / "figures-custom" / "variance_numerics.json").is_file()
    assert "files go to figures-custom/" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists(), "the lecture figures were overwritten"
    assert main(["figures", "--only", "variance_numerics"]) == 0  # the default configuration
    assert (tmp_path / "figures" / "variance_numerics.png").is_file()
    assert "files go to" not in capsys.readouterr().err


def test_unsorted_or_repeated_sizes_are_sorted_with_a_note(tmp_path):
    planned = plan(
        "figures",
        "--quick",
        "--only",
        "batch_stat_noise",
        "--batch-sizes",
        "16",
        "4",
        "8",
        "4",
        "--out",
        str(tmp_path),
    )
    ((_, config),) = planned.selected
    assert config.batch_sizes == (4, 8, 16)
    assert "batch_stat_noise: batch_sizes 16 4 8 4 sorted and without repeats: 4 8 16" in (
        planned.notes
    )


def test_a_batch_size_that_leaves_a_handful_of_steps_is_warned_about(tmp_path):
    planned = plan(
        "figures",
        "--only",
        "accuracy_vs_batch_size",
        "--batch-sizes",
        "1000",
        "--out",
        str(tmp_path),
    )
    (warning,) = planned.warnings
    assert "batch size 1000 takes only 5 optimizer steps" in warning
    assert "lr 3.125" in warning
    assert not plan("figures", "--only", "accuracy_vs_batch_size", "--out", str(tmp_path)).warnings


def test_ctrl_c_twice_during_a_two_job_run_prints_one_message_and_exits_130(tmp_path):
    out = tmp_path / "figures"
    cache = out / ".cache" / "accuracy_vs_batch_size"
    command = [sys.executable, "-m", "normlab", *QUICK[:2], "--only", "accuracy_vs_batch_size"]
    process = subprocess.Popen(
        [*command, "--jobs", "2", "--out", str(out)],
        env=user_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 120
    while not (cache.is_dir() and any(cache.glob("*.json"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the parent and both workers
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGINT)  # and once more, impatiently
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr, stderr
    assert stderr.count("normlab: interrupted") == 1
    finished = sorted(cache.glob("*.json"))
    assert finished, "the runs finished before the interrupt are kept"
    for path in finished:
        assert json.loads(path.read_text())["experiment"] == "accuracy_vs_batch_size"


def test_run_command_is_figures_only_one(tmp_path):
    assert main(["run", "variance_numerics", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "variance_numerics.png").exists()


# ---------------------------------------------------------------------------
# Bad input: one line on stderr, exit code 2, nothing written
# ---------------------------------------------------------------------------


def assert_usage_error(capsys, argv, out: Path, *expected: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert error.startswith("normlab: error: ")
    assert "\n" not in error
    for text in expected:
        assert text in error
    assert captured.out == ""
    assert not out.exists() or out.is_file(), "nothing may be written on bad input"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["figures", "--only", "varience_numerics"], "did you mean 'variance_numerics'?"),
        (["run", "variance"], "unknown experiment 'variance'"),
        (["figures", "--batch-sizes", "0", "4"], "batch size must be ≥ 1, got 0"),
        (["figures", "--batch-sizes", "-3"], "batch size must be ≥ 1"),
        (["figures", "--batch-sizes", "four"], "must be an integer"),
        (["figures", "--seq-lens", "0"], "sequence length must be ≥ 1"),
        (["figures", "--seeds", "0"], "number of seeds must be ≥ 1"),
        (["figures", "--only", "causal_leak", "--seq-lens", "1", "8"], "seq_lens must all be ≥ 2"),
        (
            ["run", "length_generalization", "--seq-lens", "1", "8"],
            "length_generalization: seq_lens must all be ≥ 2",
        ),
        (["figures", "--jobs", "0"], "jobs must be ≥ 1"),
        (["figures", "--formats", "jpg"], "invalid choice: 'jpg'"),
        (["figures", "--bogus"], "unrecognized arguments"),
        (["draw"], "invalid choice: 'draw'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments(tmp_path, capsys, arguments, expected):
    out = tmp_path / "figures"
    assert_usage_error(capsys, [*arguments, "--out", str(out)] if arguments else [], out, expected)


def test_output_folder_that_cannot_be_created(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    assert_usage_error(
        capsys, [*QUICK, "--out", str(a_file / "figures")], a_file / "figures", "cannot write"
    )
    assert_usage_error(capsys, [*QUICK, "--out", str(a_file)], a_file, "is a file")
    assert a_file.read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_output_folder_without_write_permission(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_usage_error(capsys, [*QUICK, "--out", str(locked / "figures")], locked / "figures")


@pytest.fixture
def batchnorm_experiment(monkeypatch):
    """Register a stand-in experiment that trains BatchNorm, so batch size 1 is invalid."""

    @dataclasses.dataclass(frozen=True)
    class Config(ExperimentConfig):
        batch_sizes: tuple[int, ...] = integers((2, 8), minimum=1)

        @classmethod
        def quick(cls):
            return cls(batch_sizes=(2,))

        def validate(self) -> None:
            if min(self.batch_sizes) < 2:
                raise ValueError("batch size 1 cannot train BatchNorm (one sample has variance 0)")

    module = types.ModuleType("normlab.experiments.trains_batchnorm", "Trains BatchNorm.")
    module.NAME = "trains_batchnorm"
    module.Config = Config
    module.run = lambda config, options=None: {"config": config.to_dict()}
    module.plot = lambda results: Figure()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(experiments, "REGISTRY", (*experiments.REGISTRY, module.NAME))
    return module


def test_batch_size_one_where_batchnorm_trains(tmp_path, capsys, batchnorm_experiment):
    out = tmp_path / "figures"
    argv = ["figures", "--only", "variance_numerics", "trains_batchnorm", "--batch-sizes", "1", "4"]
    # variance_numerics comes first and is valid, but nothing runs: every config is checked first.
    assert_usage_error(capsys, [*argv, "--out", str(out)], out, "trains_batchnorm:", "BatchNorm")
