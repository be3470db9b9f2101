"""norm_axes, quick: the groups measured from the layers have the textbook sizes."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import norm_axes
from normlab.experiments.norm_axes import Config


@pytest.fixture(scope="module")
def config():
    return Config.quick()


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(norm_axes.NAME)


def test_group_sizes_are_the_textbook_ones(results, config):
    n, t, d, g = config.num_samples, config.seq_len, config.num_features, config.num_groups
    expected = {"batch": n * t, "layer": d, "rms": d, "group": t * d // g, "instance": t}
    for method, size in expected.items():
        assert results["methods"][method]["group_sizes"] == [size], method
        assert results["headline"][f"group_size_{method}"] == size
        assert results["methods"][method]["num_groups"] == n * t * d // size


def test_group_labels_follow_the_axes(results, config):
    labels = {method: np.asarray(one["labels"]) for method, one in results["methods"].items()}
    # BatchNorm: the label depends on the feature only; LayerNorm: on (sample, token) only.
    assert np.all(labels["batch"] == labels["batch"][:1, :1, :])
    assert np.all(labels["layer"] == labels["layer"][:, :, :1])
    assert results["same_groups_as_layer_norm"]["rms"]
    assert not results["same_groups_as_layer_norm"]["batch"]


def test_rms_norm_does_not_center_the_others_do(results):
    for method, one in results["methods"].items():
        assert 0.99 < one["min_group_mean_square_of_output"] <= 1.0 + 1e-12, method
        if method == "rms":
            assert one["max_abs_group_mean_of_output"] > 0.1
        else:
            assert one["max_abs_group_mean_of_output"] < 1e-12, method


def test_size_formula_names_the_axes():
    assert norm_axes.size_formula([3, 4, 1], [3, 4, 8]) == "N·T = 3·4 = 12"
    assert norm_axes.size_formula([1, 4, 4], [3, 4, 8]) == "T·D/2 = 4·4 = 16"
    assert norm_axes.size_formula([1, 1, 8], [3, 4, 8]) == "D = 8"


def test_image_cube_groups_are_wu_and_hes(results, config):
    n, height, width, c = config.image_shape
    positions, groups = height * width, config.image_num_groups
    expected = {
        "batch": n * positions,
        "layer": c * positions,
        "instance": positions,
        "group": positions * c // groups,
        "layer_channels": c,
    }
    for method, size in expected.items():
        assert results["headline"][f"group_size_image_{method}"] == size, method
    cube = {method: np.asarray(one["labels"]) for method, one in results["image_methods"].items()}
    # (N, C, H·W): BatchNorm's label depends on the channel only, LayerNorm's on the sample
    assert np.all(cube["batch"] == cube["batch"][:1, :, :1])
    assert np.all(cube["layer"] == cube["layer"][:, :1, :1])
    assert np.all(cube["instance"] == cube["instance"][:, :, :1])


def test_cube_size_formula_names_the_image_axes():
    symbols = norm_axes.CUBE_AXIS_SYMBOLS
    assert norm_axes.size_formula([1, 2, 4], [4, 6, 4], symbols) == "C/3·H·W = 2·4 = 8"
    assert norm_axes.size_formula([4, 1, 4], [4, 6, 4], symbols) == "N·H·W = 4·4 = 16"
