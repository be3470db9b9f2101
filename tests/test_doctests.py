"""Every example in a normlab docstring runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import normlab

NUMPY_DEFAULT_PRINT_OPTIONS = {
    "precision": 8,
    "threshold": 1000,
    "edgeitems": 3,
    "linewidth": 75,
    "suppress": False,
    "nanstr": "nan",
    "infstr": "inf",
    "sign": "-",
    "formatter": None,
    "floatmode": "maxprec",
    "legacy": False,
}

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(normlab.__path__, prefix="normlab.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    # numpy's default print options: a lesson run earlier in this process may have set others
    with np.printoptions(**NUMPY_DEFAULT_PRINT_OPTIONS):
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
