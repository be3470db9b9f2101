"""Set-up: a fresh install prints no error and no deprecation warning (issue: the first thing a
new user sees must not read as a failed install)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string_and_the_build_backend_supports_it():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license = "MIT"$', pyproject, flags=re.M)  # a TOML table is deprecated
    minimum = re.search(r'^requires = \["setuptools>=(\d+)"\]$', pyproject, flags=re.M)
    assert minimum and int(minimum.group(1)) >= 77  # the first setuptools with SPDX licenses


def test_the_editable_install_has_no_fallback_that_prints_a_failure_first():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    install_lines = [line for line in makefile.splitlines() if "install" in line and "-e ." in line]
    assert install_lines and all("||" not in line for line in install_lines)
    assert all("--no-build-isolation" not in line for line in install_lines)


def test_the_install_commands_make_echoes_say_neither_error_nor_deprecated():
    # make prints every recipe line it runs, comments included, into the install log
    echoed = subprocess.run(
        ["make", "-n", "-B", "-C", str(ROOT), "PYTHON=python3", ".venv/.installed-test"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pip install" in echoed
    assert not re.search(r"error|deprecat", echoed, flags=re.I), echoed


def test_a_fresh_editable_install_prints_no_error_and_no_deprecation(tmp_path):
    shutil.copytree(ROOT, tmp_path / "p", ignore=shutil.ignore_patterns(".venv", ".git", "*cache*"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "-e", "."],
        cwd=tmp_path / "p",
        capture_output=True,
        text=True,
        check=True,
    )
    output = log.stdout + log.stderr
    assert "error" not in output.lower() and "deprecat" not in output.lower(), output
