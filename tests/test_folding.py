"""Folding an eval-mode BatchNorm into the Linear layer before it (normlab.folding).

* ``fold_batchnorm(linear, batchnorm)`` equals ``batchnorm(linear(x))`` to float rounding
  (float32 and float64; with and without the Linear bias and BatchNorm's affine
  parameters; Batch Renorm and ghost batches in eval mode; with a padding mask);
* ``fold_all_batchnorms(mlp)`` leaves no BatchNorm, keeps the layer names, equals the
  eval-mode network and changes nothing in it;
* a BatchNorm in training mode, one without running statistics, a BatchNorm after
  something else than a Linear layer, and mismatched sizes are errors that say why.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import normlab as nl
from normlab import nn
from normlab.gradcheck import relative_error

#: float rounding of one product and one sum per output, relative to the largest output
FOLD_TOLERANCE = {np.float32: 1e-6, np.float64: 1e-14}


def trained_batchnorm(rng, num_features=4, *, layer_class=nl.BatchNorm, **options):
    """An eval-mode BatchNorm with random γ, β and running statistics far from 0 and 1."""
    layer = layer_class(num_features, **options)
    for name, value in layer.params.items():
        value[...] = rng.uniform(0.5, 2.0, size=num_features) if name == "weight" else 0.3
    for _ in range(5):
        layer(rng.normal(3.0, 2.0, size=(8, num_features)).astype(layer.dtype))
    return layer.eval()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("linear_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(
    ("layer_class", "options"),
    [
        (nl.BatchNorm, {}),
        (nl.BatchNorm, {"affine": False}),
        (nl.BatchNorm, {"bias": False}),
        (nl.BatchNorm, {"ghost_batch_size": 2}),
        (nl.BatchRenorm, {"r_max": 3.0, "d_max": 5.0}),
    ],
    ids=["batchnorm", "no-affine", "no-beta", "ghost", "batch-renorm"],
)
def test_folded_linear_equals_batchnorm_after_linear(dtype, linear_bias, layer_class, options, rng):
    linear = nn.Linear(3, 4, rng=rng, bias=linear_bias, dtype=dtype)
    if linear_bias:
        linear.params["bias"][...] = rng.normal(size=4)
    batchnorm = trained_batchnorm(rng, layer_class=layer_class, dtype=dtype, **options)
    x = rng.normal(size=(10, 3)).astype(dtype)
    folded = nl.fold_batchnorm(linear, batchnorm)
    expected = batchnorm(linear(x))
    y = folded(x)
    assert y.dtype == dtype and folded.params["weight"].dtype == dtype
    assert relative_error(y, expected) < FOLD_TOLERANCE[dtype]
    assert "bias" in folded.params and ("bias" in linear.params) == linear_bias


def test_fold_leaves_its_arguments_unchanged(rng):
    linear, batchnorm = nn.Linear(3, 4, rng=rng, bias=False), trained_batchnorm(rng)
    linear_before, batchnorm_before = copy.deepcopy(linear), copy.deepcopy(batchnorm)
    nl.fold_batchnorm(linear, batchnorm)
    assert "bias" not in linear.params
    np.testing.assert_array_equal(linear.params["weight"], linear_before.params["weight"])
    for name, value in batchnorm_before.state_dict().items():
        np.testing.assert_array_equal(batchnorm.state_dict()[name], value)


def test_folded_linear_keeps_the_padding_mask_semantics(rng):
    linear = nn.Linear(3, 4, rng=rng, dtype=np.float64)
    batchnorm = trained_batchnorm(rng, dtype=np.float64)
    x = rng.normal(size=(2, 5, 3))
    mask = np.arange(5) < np.array([[5], [2]])
    expected = batchnorm(linear(x, mask=mask), mask=mask)
    y = nl.fold_batchnorm(linear, batchnorm)(x, mask=mask)
    assert relative_error(y, expected) < FOLD_TOLERANCE[np.float64]
    assert np.all(y[~mask] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("depth", [1, 3])
def test_fold_all_batchnorms_leaves_an_mlp_with_no_batchnorm_and_the_same_outputs(dtype, depth):
    rng = np.random.default_rng(0)
    model = nn.MLP(6, 8, 3, norm="batch", rng=rng, depth=depth, dtype=dtype)
    for _ in range(5):  # training steps move the running statistics and γ, β off 0 and 1
        model(rng.normal(2.0, 3.0, size=(16, 6)).astype(dtype))
    for value in model.params.values():
        value += (0.2 * rng.normal(size=value.shape)).astype(dtype)
    model.eval()
    before = copy.deepcopy(model)
    deployed = nl.fold_all_batchnorms(model)
    assert not any(isinstance(layer, nl.BatchNorm) for layer in deployed.modules())
    assert len(deployed) == len(model) - depth
    names = [name for name, _ in deployed.named_children()]
    assert names == [
        name for name, layer in model.named_children() if not isinstance(layer, nl.BatchNorm)
    ]
    assert not deployed.training
    x = rng.normal(size=(20, 6)).astype(dtype)
    assert relative_error(deployed(x), model(x)) < 10 * FOLD_TOLERANCE[dtype]
    for name, value in before.state_dict().items():  # the model itself is unchanged
        np.testing.assert_array_equal(model.state_dict()[name], value)


def test_nested_sequentials_are_folded_and_other_layers_copied(rng):
    def linear_and_batchnorm():
        return nn.Sequential(
            nn.Linear(4, 4, rng=rng, dtype=np.float64), trained_batchnorm(rng, dtype=np.float64)
        )

    model = nn.Sequential(
        {
            "block": linear_and_batchnorm(),
            "act": nn.ReLU(),
            "norm": nl.LayerNorm(4, dtype=np.float64),
        }
    )
    model.eval()
    deployed = nl.fold_all_batchnorms(model)
    assert [type(layer).__name__ for layer in deployed.modules()] == [
        "Sequential",
        "Sequential",
        "Linear",
        "ReLU",
        "LayerNorm",
    ]
    x = rng.normal(size=(5, 4))
    assert relative_error(deployed(x), model(x)) < FOLD_TOLERANCE[np.float64]
    assert deployed[2] is not model[2]  # a copy: the deployed network shares nothing


def test_a_network_without_batchnorm_is_copied_unchanged(rng):
    model = nn.MLP(4, 6, 2, norm="layer", rng=0).eval()
    x = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(nl.fold_all_batchnorms(model)(x), model(x))


# ---------------------------------------------------------------------------
# What cannot be folded
# ---------------------------------------------------------------------------


def test_a_batchnorm_in_training_mode_is_rejected_with_the_fix(rng):
    batchnorm = trained_batchnorm(rng).train()
    with pytest.raises(ValueError, match=r"training mode.*\.eval\(\)"):
        nl.fold_batchnorm(nn.Linear(3, 4, rng=rng), batchnorm)
    model = nn.MLP(3, 4, 2, norm="batch", rng=0)  # built in training mode
    with pytest.raises(ValueError, match=r"BatchNorm '1'.*training mode"):
        nl.fold_all_batchnorms(model)


def test_a_batchnorm_without_running_statistics_is_rejected_even_in_eval_mode(rng):
    batchnorm = nl.BatchNorm(4, track_running_stats=False).eval()
    with pytest.raises(ValueError, match=r"no running statistics.*track_running_stats=False"):
        nl.fold_batchnorm(nn.Linear(3, 4, rng=rng), batchnorm)


def test_mismatched_sizes_and_wrong_types_are_rejected(rng):
    batchnorm = trained_batchnorm(rng)
    with pytest.raises(ValueError, match=r"out_features=5.*num_features=4"):
        nl.fold_batchnorm(nn.Linear(3, 5, rng=rng), batchnorm)
    with pytest.raises(TypeError, match="must be a Linear layer, got ReLU"):
        nl.fold_batchnorm(nn.ReLU(), batchnorm)
    with pytest.raises(TypeError, match="expected a BatchNorm to fold, got LayerNorm"):
        nl.fold_batchnorm(nn.Linear(3, 4, rng=rng), nl.LayerNorm(4))
    with pytest.raises(TypeError, match="expected a Sequential"):
        nl.fold_all_batchnorms(nn.Linear(3, 4, rng=rng))


def test_a_batchnorm_that_does_not_follow_a_linear_layer_is_rejected(rng):
    model = nn.Sequential(nn.Linear(3, 4, rng=rng), nn.ReLU(), trained_batchnorm(rng)).eval()
    with pytest.raises(ValueError, match="BatchNorm '2' follows a ReLU, not a Linear"):
        nl.fold_all_batchnorms(model)
    first = nn.Sequential(trained_batchnorm(rng, 3), nn.Linear(3, 4, rng=rng)).eval()
    with pytest.raises(ValueError, match="BatchNorm '0' follows nothing"):
        nl.fold_all_batchnorms(first)


def test_a_batchnorm_inside_another_container_is_named(rng):
    model = nn.Sequential(nn.SequenceModel(3, 4, 2, rng=0, norm="batch")).eval()
    with pytest.raises(ValueError, match=r"'0' \(SequenceModel\) holds a BatchNorm"):
        nl.fold_all_batchnorms(model)
