"""Folding an eval-mode BatchNorm into the Linear or Conv2d layer before it (normlab.folding).

* ``fold_batchnorm(linear, batchnorm)`` equals ``batchnorm(linear(x))`` to float rounding
  (float32 and float64; with and without the Linear bias and BatchNorm's affine
  parameters; Batch Renorm and ghost batches in eval mode; with a padding mask);
* ``fold_batchnorm(conv, batchnorm)`` equals ``batchnorm(conv(x))`` on (N, H, W, C) images
  (float32 and float64; with and without the convolution's bias; stride and zero padding,
  whose border positions must come out right too; non-square kernels);
* ``fold_all_batchnorms(mlp)`` and ``fold_all_batchnorms(cnn)`` leave no BatchNorm, keep
  the layer names, equal the eval-mode network and change nothing in it;
* a BatchNorm in training mode, one without running statistics, a BatchNorm after
  something else than a Linear or Conv2d layer, and mismatched sizes are errors that say why.
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
    with pytest.raises(TypeError, match="must be a Linear or Conv2d layer, got ReLU"):
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


# ---------------------------------------------------------------------------
# Conv2d
# ---------------------------------------------------------------------------


def image_batch(rng, dtype, shape=(5, 7, 6, 3)):
    """Images (N, H, W, C_in) with an offset, so that the bias and the mean matter."""
    return rng.normal(1.5, 2.0, size=shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("conv_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding"),
    [(3, 1, 1), (3, 2, 0), ((1, 3), 1, (0, 2)), (2, (1, 2), 1)],
    ids=["3x3-same", "3x3-stride2", "1x3-padded", "2x2-stride12"],
)
@pytest.mark.parametrize(
    ("layer_class", "options"),
    [
        (nl.BatchNorm, {}),
        (nl.BatchNorm, {"affine": False}),
        (nl.BatchRenorm, {"r_max": 3.0, "d_max": 5.0}),
    ],
    ids=["batchnorm", "no-affine", "batch-renorm"],
)
def test_folded_conv_equals_batchnorm_after_conv(
    dtype, conv_bias, kernel_size, stride, padding, layer_class, options, rng
):
    conv = nn.Conv2d(3, 4, kernel_size, stride, padding, bias=conv_bias, rng=rng, dtype=dtype)
    batchnorm = layer_class(4, dtype=dtype, **options)
    for name, value in batchnorm.params.items():
        value[...] = rng.uniform(0.5, 2.0, size=4) if name == "weight" else 0.3
    for _ in range(5):  # running statistics of this convolution's outputs, far from 0 and 1
        batchnorm(conv(image_batch(rng, dtype)))
    batchnorm.eval()
    x = image_batch(rng, dtype)
    expected = batchnorm(conv(x))
    folded = nl.fold_batchnorm(conv, batchnorm)
    y = folded(x)
    assert isinstance(folded, nn.Conv2d)
    assert (folded.kernel_size, folded.stride, folded.padding) == (
        conv.kernel_size,
        conv.stride,
        conv.padding,
    )
    assert y.shape == expected.shape and y.dtype == dtype
    assert folded.params["weight"].dtype == dtype and folded.params["weight"].shape == (
        conv.params["weight"].shape
    )
    assert relative_error(y, expected) < FOLD_TOLERANCE[dtype]
    # the border positions, where zero padding cuts the window, are folded as exactly
    border = np.abs(y[:, 0] - expected[:, 0]).max() / np.abs(expected).max()
    assert border < FOLD_TOLERANCE[dtype]
    assert ("bias" in conv.params) == conv_bias and "bias" in folded.params


def test_conv_folding_scales_each_output_channel_kernel(rng):
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False, rng=rng, dtype=np.float64)
    batchnorm = trained_batchnorm(rng, 3, dtype=np.float64)
    folded = nl.fold_batchnorm(conv, batchnorm)
    scale = batchnorm.params["weight"] / np.sqrt(batchnorm.running_var + batchnorm.eps)  # (C_out,)
    for channel in range(3):  # the kernel of output channel o is weight[..., o]
        np.testing.assert_allclose(
            folded.params["weight"][..., channel],
            conv.params["weight"][..., channel] * scale[channel],
            rtol=1e-15,
        )
    expected_bias = batchnorm.params["bias"] - batchnorm.running_mean * scale
    np.testing.assert_allclose(folded.params["bias"], expected_bias, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fold_all_batchnorms_leaves_a_cnn_with_no_batchnorm_and_the_same_outputs(dtype):
    rng = np.random.default_rng(1)
    model = nn.CNN(1, 10, widths=(4, 8), rng=rng, dtype=dtype)
    for _ in range(5):  # training forwards move the running statistics off 0 and 1
        model(rng.normal(0.5, 2.0, size=(8, 8, 8, 1)).astype(dtype))
    for value in model.params.values():
        value += (0.2 * rng.normal(size=value.shape)).astype(dtype)
    model.eval()
    before = copy.deepcopy(model)
    deployed = nl.fold_all_batchnorms(model)
    assert not any(isinstance(layer, nl.BatchNorm) for layer in deployed.modules())
    names = [name for name, _ in deployed.named_children()]
    assert names == [
        name for name, layer in model.named_children() if not isinstance(layer, nl.BatchNorm)
    ]
    assert [type(layer).__name__ for layer in deployed][:3] == ["Conv2d", "ReLU", "MaxPool2d"]
    x = rng.normal(size=(6, 8, 8, 1)).astype(dtype)
    assert relative_error(deployed(x), model(x)) < 10 * FOLD_TOLERANCE[dtype]
    assert np.array_equal(deployed(x).argmax(axis=1), model(x).argmax(axis=1))
    for name, value in before.state_dict().items():  # the model itself is unchanged
        np.testing.assert_array_equal(model.state_dict()[name], value)


def test_a_conv_and_a_batchnorm_of_other_sizes_are_rejected(rng):
    conv = nn.Conv2d(1, 5, 3, rng=rng)
    with pytest.raises(ValueError, match=r"Conv2d layer has out_channels=5.*num_features=4"):
        nl.fold_batchnorm(conv, trained_batchnorm(rng))


def test_a_batchnorm_after_a_pool_is_rejected(rng):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, rng=rng), nn.MaxPool2d(2), trained_batchnorm(rng)
    ).eval()
    with pytest.raises(
        ValueError, match="BatchNorm '2' follows a MaxPool2d, not a Linear or Conv2d"
    ):
        nl.fold_all_batchnorms(model)


def test_a_cnn_in_training_mode_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match=r"BatchNorm '1'.*training mode.*\.eval\(\)"):
        nl.fold_all_batchnorms(nn.CNN(1, 10, widths=(4,), rng=0))
