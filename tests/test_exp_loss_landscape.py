"""loss_landscape: the probe along the gradient is right and leaves the model as it was.

The quick run (60 steps, three probes) is too small for the comparison between the
methods, which the default run makes (README); here the probe itself is checked.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab import nn, training
from normlab.experiments import loss_landscape


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(loss_landscape.NAME)


def batch_and_model(norm: str, dtype=np.float64):
    split = training.digits()
    model = nn.MLP(64, 16, 10, norm=norm, rng=0, dtype=dtype)
    return split.x_train[:32].astype(dtype), split.y_train[:32], model


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_a_probe_leaves_the_parameters_and_the_running_statistics_as_they_were(norm):
    x, y, model = batch_and_model(norm)
    before = {name: value.copy() for name, value in model.params.items()}
    buffers = {name: value.copy() for name, value in model.state_dict().items()}
    loss_landscape.probe_along_gradient(model, x, y, (0.01, 0.1))
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, before[name])
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, buffers[name])


def test_a_tiny_step_lowers_the_loss_by_eta_times_the_squared_gradient_norm():
    x, y, model = batch_and_model("batch")
    eta = 1e-6
    probe = loss_landscape.probe_along_gradient(model, x, y, (eta,))
    # first order: L(w − ηg) = L(w) − η‖g‖² + O(η²)
    assert probe["loss_variation"] == pytest.approx(eta * probe["gradient_norm"] ** 2, rel=1e-3)
    assert probe["beta_smoothness"] == pytest.approx(
        probe["gradient_change"] / (eta * probe["gradient_norm"])
    )


def test_probes_are_taken_every_probe_every_steps_and_are_finite(results):
    config = results["config"]
    assert results["probe_steps"] == list(
        range(config["probe_every"], config["steps"] + 1, config["probe_every"])
    )
    for entry in results["by_depth"].values():
        for values in entry.values():
            for key in loss_landscape.MEASURES:
                assert np.all(np.asarray(values[key], dtype=float) >= 0)


def test_the_headline_ratios_are_the_ratios_of_the_medians(results):
    for depth in results["depths"]:
        headline = results["headline"][f"depth_{depth}"]
        per_norm = headline["per_norm"]
        for key in loss_landscape.MEASURES:
            expected = per_norm["none"][f"median_{key}"] / per_norm["batch"][f"median_{key}"]
            assert headline[f"none_over_batch_{key}"] == pytest.approx(expected)


def test_summary_has_a_row_per_depth_and_method_and_the_ratios(results):
    rows = loss_landscape.summary(results).splitlines()[1:]
    assert len(rows) == len(results["depths"]) * (len(results["norms"]) + 1)
