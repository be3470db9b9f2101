"""The results committed in ``figures/`` (written by ``make figures``), and how prose writes them.

Shared by the tests that tie sentences to those numbers: the README's (``test_readme.py``)
and the notebooks' (``test_notebook_prose.py``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"


@functools.cache
def results(name: str) -> dict:
    """The default run of experiment ``name``, as committed in ``figures/<name>.json``."""
    return json.loads((FIGURES / f"{name}.json").read_text(encoding="utf-8"))


def headline(name: str) -> dict:
    return results(name)["headline"]


def at(path: str):
    """A getter for a slash-separated path into a headline dict ("momentum_0.1/final_...")."""

    def get(values: dict):
        for key in path.split("/"):
            values = values[key]
        return values

    return get


def minus_sign(text: str) -> str:
    """``text`` with the minus sign the README prints (−) for each hyphen-minus."""
    return text.replace("-", "−")


def signed(value: float, digits: int = 1) -> str:
    """A signed number as the README prints it: ``+0.6``, ``−2.0`` (a true minus sign)."""
    return minus_sign(f"{value:+.{digits}f}")


def unsigned_minus(value: float, digits: int = 1) -> str:
    """A number with a true minus sign and no plus: ``−31.4``, ``1.6``."""
    return minus_sign(f"{value:.{digits}f}")


def folded(text: str) -> str:
    """``text`` with every run of white space folded to one space: line breaks are free."""
    return " ".join(text.split())
