"""Fixtures shared by the tests of the normlab core.

* ``rng``: a numpy Generator with a fixed seed, fresh for every test.
* ``torch``: the torch module; the test is skipped only when torch cannot be imported.
* ``kind``: parametrizes a test over the layers of :data:`LAYER_KINDS`.
* ``quick_runs``: every experiment's quick config, run once per session (shared by the
  contract test and the science tests).
* ``build_layer``: a layer from :func:`normlab.make_norm`, with ``rng`` a random (not 1/0)
  weight and bias, so that a bug in how γ or β enter the forward or backward cannot hide.
* ``reference_pass``: what a layer computes, from the textbook :mod:`normlab.reference`.
  Test modules import these (and the constants) with ``from conftest import ...``.

Every layer here is built with ``dtype=`` (normlab's keyword for the dtype of the
parameters and running statistics) so that float64 tests are float64 end to end.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest

import normlab as nl
from normlab import experiments, reference
from normlab.experiments import SweepOptions

SEED = 20240617
LAYER_KINDS = ("batch", "layer", "rms", "group", "instance")

#: The channel count used by ``build_layer`` when a test does not care, and the default
#: number of groups: two groups of three channels, so that even on (N, C) input every
#: GroupNorm statistic averages more than two values (with two, x̂ = ±1 and dx is ~0).
NUM_FEATURES = 6
NUM_GROUPS = 2


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine: threads only cost
    return torch


@pytest.fixture(params=LAYER_KINDS)
def kind(request) -> str:
    return request.param


def build_layer(
    kind: str,
    num_features: int = NUM_FEATURES,
    *,
    dtype=np.float64,
    rng: np.random.Generator | None = None,
    num_groups: int = NUM_GROUPS,
    **options,
):
    """A normlab layer of the given kind over ``num_features`` trailing features.

    ``options`` go to the constructor (``affine=False``, ``momentum=None``, ...).
    For LayerNorm and RMSNorm ``num_features`` may be a tuple (``normalized_shape``).
    With ``rng`` the weight and bias are drawn at random (weight around 1, bias around 0).
    """
    if kind == "instance":
        options.setdefault("affine", True)  # torch's default is False; tests want γ and β
    layer = nl.make_norm(kind, num_features, dtype=dtype, num_groups=num_groups, **options)
    if rng is not None:
        if "weight" in layer.params:
            weight = layer.params["weight"]
            weight[...] = rng.uniform(0.5, 2.0, size=weight.shape)
        if "bias" in layer.params:
            bias = layer.params["bias"]
            bias[...] = rng.normal(0.0, 1.0, size=bias.shape)
    return layer


def reference_pass(layer, x, dy, mask=None, *, layer_input_dtype=None):
    """Output, input gradient and parameter gradients of ``layer``, from :mod:`normlab.reference`.

    The textbook functions get the layer's parameters (ones and zeros when it has
    none), eps and, for BatchNorm, its mode: the batch's statistics in training
    mode (or without running statistics), its running statistics in eval mode.
    The computation is in ``x``'s dtype, so a float32 layer can be checked against
    float64 textbook numbers; ``layer_input_dtype`` is the dtype the layer itself
    saw, which sets RMSNorm's ``eps=None`` (default: ``x``'s). The layer is not
    called. Returns ``(y, dx, grads)``, ``grads`` with the keys of ``layer.params``.
    """
    dtype = x.dtype
    feature_shape = getattr(layer, "normalized_shape", (x.shape[-1],))
    weight = layer.params.get("weight", np.ones(feature_shape)).astype(dtype)
    bias = layer.params.get("bias", np.zeros(feature_shape)).astype(dtype)
    eps = layer.eps
    dbias = None
    if isinstance(layer, nl.BatchNorm) and layer.ghost_batch_size is not None:
        raise TypeError("no textbook reference for ghost batches: compare with each chunk")
    if isinstance(layer, nl.BatchRenorm) and layer.uses_batch_statistics:
        running = layer.running_mean.astype(dtype), layer.running_var.astype(dtype)
        limits = layer.r_max, layer.d_max
        y, cache = reference.batch_renorm_forward(x, weight, bias, *running, eps, *limits, mask)
        dx, dweight, dbias = reference.batch_renorm_backward(dy, cache)
    elif isinstance(layer, nl.BatchNorm) and layer.uses_batch_statistics:
        y, cache = reference.batch_norm_forward(x, weight, bias, eps, mask=mask)
        dx, dweight, dbias = reference.batch_norm_backward(dy, cache)
    elif isinstance(layer, nl.BatchNorm):
        running = layer.running_mean.astype(dtype), layer.running_var.astype(dtype)
        y, cache = reference.batch_norm_eval_forward(x, *running, weight, bias, eps, mask=mask)
        dx, dweight, dbias = reference.batch_norm_eval_backward(dy, cache)
    elif isinstance(layer, nl.LayerNorm):
        y, cache = reference.layer_norm_forward(x, weight, bias, eps, mask=mask)
        dx, dweight, dbias = reference.layer_norm_backward(dy, cache)
    elif isinstance(layer, nl.RMSNorm):
        if eps is None:  # the machine epsilon of the dtype the layer computed in
            eps = float(np.finfo(layer_input_dtype or dtype).eps)
        y, cache = reference.rms_norm_forward(x, weight, eps, mask=mask)
        dx, dweight = reference.rms_norm_backward(dy, cache)
    elif isinstance(layer, nl.GroupNorm):
        y, cache = reference.group_norm_forward(x, layer.num_groups, weight, bias, eps, mask=mask)
        dx, dweight, dbias = reference.group_norm_backward(dy, cache)
    elif isinstance(layer, nl.InstanceNorm):
        y, cache = reference.instance_norm_forward(x, weight, bias, eps, mask=mask)
        dx, dweight, dbias = reference.instance_norm_backward(dy, cache)
    else:
        raise TypeError(f"no textbook reference for {type(layer).__name__}")
    grads = {"weight": dweight, "bias": dbias}
    return y, dx, {name: grads[name] for name in layer.params}


# ---------------------------------------------------------------------------
# The experiments' quick configs, each run once per test session
# ---------------------------------------------------------------------------


class QuickRuns:
    """Each registered experiment's quick config, run once and cached in one folder.

    ``quick_runs.results(name)`` is what ``Experiment.run`` returns (canonical numbers);
    ``quick_runs.records(name)`` the per-run cache records (``experiment``, ``function``,
    ``run``, ``result``) that the sweep wrote. The contract test and the science tests of
    every experiment share these, so no quick config runs twice.
    """

    def __init__(self, cache_dir) -> None:
        self.cache_dir = cache_dir
        self._results: dict[str, dict] = {}

    def options(self) -> SweepOptions:
        return SweepOptions(cache_dir=self.cache_dir, progress=False)

    def results(self, name: str) -> dict:
        if name not in self._results:
            experiment = experiments.get(name)
            # One lock per experiment: under pytest-xdist the test processes share the
            # folder, and the second to ask waits, then reads the first one's runs.
            with open(self.cache_dir / f"{name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._results[name] = experiment.run(experiment.config(quick=True), self.options())
        return self._results[name]

    def records(self, name: str) -> list[dict]:
        self.results(name)
        return [
            json.loads(path.read_text(encoding="utf-8"))
            for path in sorted((self.cache_dir / name).glob("*.json"))
        ]


def session_folder(tmp_path_factory, name: str) -> Path:
    """A folder of this test session that every pytest-xdist worker shares."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker has its own basetemp below one
        root = root.parent
    folder = root / name
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def quick_runs(tmp_path_factory) -> QuickRuns:
    return QuickRuns(session_folder(tmp_path_factory, "quick-runs"))
