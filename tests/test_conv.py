"""Conv2d, MaxPool2d, GlobalAvgPool2d and the CNN: parity with torch, gradients, bad input.

* parity with torch in float32 and float64: forward, input gradient and every parameter
  gradient, with the weights moved from the torch module through ``load_state_dict`` and
  the gradients compared through ``state_dict(grads=True)``; the whole CNN against the same
  network assembled from torch modules, for every kind of normalization (torch is
  channels-first, so inputs go through ``np.moveaxis(x, -1, 1)``);
* float64 finite-difference checks with a random upstream gradient for every module, and
  the fast Conv2d (im2col) against its definition in loops, ``normlab.reference``;
* max pooling's ties (the first largest entry of a window gets the gradient, as in torch)
  and NaN windows;
* the rule for a convolution's bias before a norm, the initialization, state round trips,
  the digits as images, a short training run, and every bad input with its message.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from test_parity_torch import assert_close_to_torch, torch_dtype

import normlab as nl
from normlab import nn, reference
from normlab.data import iterate_minibatches, load_digits_split
from normlab.gradcheck import numerical_gradient, relative_error

DTYPES = (np.float32, np.float64)
README = Path(__file__).resolve().parents[1] / "README.md"

#: (in_channels, out_channels, kernel_size, stride, padding, bias, (H, W))
CONV_CASES = [
    pytest.param(3, 4, 3, 1, 1, True, (7, 6), id="k3-s1-p1"),
    pytest.param(2, 5, (2, 3), (2, 1), (0, 2), False, (7, 8), id="k2x3-s2x1-p0x2-no-bias"),
    pytest.param(1, 2, 1, 3, 2, True, (5, 5), id="k1-s3-p2"),
    pytest.param(3, 2, 5, 2, 0, True, (5, 9), id="k5-s2-kernel-as-tall-as-input"),
    pytest.param(4, 3, 3, 2, 1, True, (8, 8), id="k3-s2-p1-last-row-uncovered"),
]

#: (kernel_size, stride, (H, W))
POOL_CASES = [
    pytest.param(2, None, (8, 8), id="k2"),
    pytest.param(2, None, (7, 5), id="k2-floor-mode-drops-last-row-and-column"),
    pytest.param(3, 2, (9, 9), id="k3-s2-overlapping"),
    pytest.param(2, 1, (5, 5), id="k2-s1-overlapping"),
    pytest.param((2, 3), (1, 2), (6, 7), id="k2x3-s1x2"),
]

#: (norm, norm_kwargs) of the CNN cases; group with 1 group is LayerNorm over (H, W, C)
CNN_NORMS = [pytest.param(kind, {}, id=kind) for kind in nl.NORM_KINDS] + [
    pytest.param("group", {"num_groups": 1}, id="group-1-group"),
    pytest.param("batch", {"momentum": None}, id="batch-cumulative"),
]


def to_torch(torch, array: np.ndarray):
    """(N, H, W, C) -> a (N, C, H, W) tensor; (N, C) stays."""
    if array.ndim == 4:
        array = np.moveaxis(array, -1, 1)
    return torch.tensor(np.ascontiguousarray(array))


def from_torch(tensor) -> np.ndarray:
    array = tensor.detach().numpy()
    return np.moveaxis(array, 1, -1) if array.ndim == 4 else array


def random_images(rng, shape, dtype) -> np.ndarray:
    """Channels with different means and scales."""
    offsets = rng.normal(0.0, 2.0, size=shape[-1])
    scales = rng.uniform(0.5, 3.0, size=shape[-1])
    return (rng.normal(size=shape) * scales + offsets).astype(dtype)


def compare_with_torch(torch, ours, theirs, x, dy) -> None:
    """Forward, dx and every parameter gradient (through state_dict(grads=True))."""
    y = ours(x)
    dx = ours.backward(dy)
    x_torch = to_torch(torch, x).requires_grad_(True)
    theirs.zero_grad(set_to_none=True)
    y_torch = theirs(x_torch)
    y_torch.backward(to_torch(torch, dy))
    assert_close_to_torch(y, from_torch(y_torch), "output")
    assert_close_to_torch(dx, from_torch(x_torch.grad), "dx")
    gradients = ours.state_dict(grads=True)
    assert set(gradients) == {name for name, _ in theirs.named_parameters()}
    for name, parameter in theirs.named_parameters():
        assert_close_to_torch(gradients[name], parameter.grad, f"state_dict(grads=True)[{name}]")


def load_from_torch(torch, ours, theirs) -> None:
    """torch's weights (and buffers) into ours, by name, through load_state_dict."""
    ours.load_state_dict(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[name], value.numpy(), err_msg=name)


# ---------------------------------------------------------------------------
# Parity with torch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("cin", "cout", "kernel", "stride", "padding", "bias", "hw"), CONV_CASES)
def test_conv2d_matches_torch(torch, rng, cin, cout, kernel, stride, padding, bias, hw, dtype):
    ours = nn.Conv2d(cin, cout, kernel, stride, padding, bias, rng=rng, dtype=dtype)
    theirs = torch.nn.Conv2d(
        cin, cout, kernel, stride, padding, bias=bias, dtype=torch_dtype(torch, dtype)
    )
    load_from_torch(torch, ours, theirs)
    for _ in range(2):  # the second step overwrites the first one's cache and gradients
        x = random_images(rng, (3, *hw, cin), dtype)
        dy = rng.normal(size=ours.output_shape(x.shape)).astype(dtype)
        compare_with_torch(torch, ours, theirs, x, dy)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kernel", "stride", "hw"), POOL_CASES)
def test_maxpool2d_matches_torch_and_breaks_ties_as_torch(torch, rng, kernel, stride, hw, dtype):
    ours = nn.MaxPool2d(kernel, stride)
    theirs = torch.nn.MaxPool2d(kernel, stride)
    x = np.round(rng.normal(size=(2, *hw, 3))).astype(dtype)  # integers: many ties
    x[0] = np.maximum(x[0], 0)  # windows of zeros, as after a ReLU
    x[1, :, :, 0] = 1.0  # every entry of these windows ties
    dy = rng.normal(size=ours(x).shape).astype(dtype)
    compare_with_torch(torch, ours, theirs, x, dy)


NAN_WINDOWS = np.array([[np.nan, 1.0, 2.0, 0.0], [np.nan, 5.0, 3.0, 4.0]]).reshape(1, 2, 4, 1)


def test_maxpool2d_window_with_nan_outputs_nan_and_its_last_nan_gets_the_gradient():
    pool = nn.MaxPool2d(2)
    y = pool(NAN_WINDOWS)  # windows [[nan, 1], [nan, 5]] and [[2, 0], [3, 4]]
    np.testing.assert_array_equal(y.ravel(), [np.nan, 4.0])
    dx = pool.backward(np.array([2.0, 3.0]).reshape(1, 1, 2, 1))
    expected = np.zeros((2, 4))
    expected[1, 0], expected[1, 3] = 2.0, 3.0  # the second NaN; the 4
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)


def test_maxpool2d_nan_windows_match_torch(torch):
    pool = nn.MaxPool2d(2)
    y = pool(NAN_WINDOWS)
    dx = pool.backward(np.array([2.0, 3.0]).reshape(1, 1, 2, 1))
    x_torch = to_torch(torch, NAN_WINDOWS).requires_grad_(True)
    y_torch = torch.nn.functional.max_pool2d(x_torch, 2)
    y_torch.backward(torch.tensor([2.0, 3.0], dtype=torch.float64).reshape(1, 1, 1, 2))
    np.testing.assert_array_equal(y, from_torch(y_torch))  # NaN where torch has NaN
    np.testing.assert_array_equal(dx, from_torch(x_torch.grad))


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avg_pool_matches_torch(torch, rng, dtype):
    class GlobalAvgPool(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    x = random_images(rng, (3, 5, 4, 6), dtype)
    dy = rng.normal(size=(3, 6)).astype(dtype)
    compare_with_torch(torch, nn.GlobalAvgPool2d(), GlobalAvgPool(), x, dy)


def torch_cnn(torch, model: nn.CNN, dtype):
    """The network of ``model`` assembled from torch modules, with the same names.

    torch's LayerNorm and RMSNorm normalize the last axis, so on channels-first
    activations they see them channels-last for the norm.
    """
    tdtype = torch_dtype(torch, dtype)

    class GlobalAvgPool(torch.nn.Module):
        def forward(self, x):  # (N, C, H, W) -> (N, C)
            return x.mean(dim=(2, 3))

    def per_position(norm_class):
        class PerPosition(norm_class):
            def forward(self, x):  # (N, C, H, W) -> (N, H, W, C) -> norm -> back
                return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

        return PerPosition

    layers = OrderedDict()
    for name, layer in model.named_children():
        if isinstance(layer, nn.Conv2d):
            bias = "bias" in layer.params
            module = torch.nn.Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, 1, layer.padding,
                bias=bias, dtype=tdtype,
            )  # fmt: skip
        elif isinstance(layer, nl.BatchNorm):
            module = torch.nn.BatchNorm2d(
                layer.num_features, layer.eps, layer.momentum, dtype=tdtype
            )
        elif isinstance(layer, nl.GroupNorm):
            module = torch.nn.GroupNorm(layer.num_groups, layer.num_channels, dtype=tdtype)
        elif isinstance(layer, nl.InstanceNorm):
            module = torch.nn.InstanceNorm2d(layer.num_features, dtype=tdtype)
        elif isinstance(layer, nl.LayerNorm):
            module = per_position(torch.nn.LayerNorm)(layer.normalized_shape, dtype=tdtype)
        elif isinstance(layer, nl.RMSNorm):
            module = per_position(torch.nn.RMSNorm)(layer.normalized_shape, dtype=tdtype)
        elif isinstance(layer, nn.Identity):
            module = torch.nn.Identity()
        elif isinstance(layer, nn.ReLU):
            module = torch.nn.ReLU()
        elif isinstance(layer, nn.MaxPool2d):
            module = torch.nn.MaxPool2d(layer.kernel_size, layer.stride)
        elif isinstance(layer, nn.GlobalAvgPool2d):
            module = GlobalAvgPool()
        else:
            module = torch.nn.Linear(layer.in_features, layer.out_features, dtype=tdtype)
        layers[name] = module
    return torch.nn.Sequential(layers)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("norm", "norm_kwargs"), CNN_NORMS)
def test_cnn_matches_the_same_network_built_from_torch_modules(
    torch, rng, norm, norm_kwargs, dtype
):
    ours = nn.CNN(1, 10, (8, 16), norm, rng=rng, norm_kwargs=norm_kwargs, dtype=dtype)
    theirs = torch_cnn(torch, ours, dtype)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    load_from_torch(torch, ours, theirs)
    for _ in range(2):  # training mode: batch statistics, running averages updated
        x = random_images(rng, (4, 8, 8, 1), dtype)
        dy = rng.normal(size=(4, 10)).astype(dtype)
        compare_with_torch(torch, ours, theirs, x, dy)
    state = ours.state_dict()
    for name, value in theirs.state_dict().items():  # running statistics too
        if name.endswith("num_batches_tracked"):
            assert int(state[name]) == int(value) == 2, name
        else:
            assert_close_to_torch(state[name], value, name)
    ours.eval()
    theirs.eval()
    x = random_images(rng, (3, 8, 8, 1), dtype)
    compare_with_torch(torch, ours, theirs, x, rng.normal(size=(3, 10)).astype(dtype))


def test_state_dict_moves_weights_both_ways_between_torch_and_normlab(torch, rng):
    theirs = torch.nn.Conv2d(3, 5, (3, 2), stride=2, padding=1)
    ours = nn.Conv2d(3, 5, (3, 2), stride=2, padding=1, rng=rng)
    ours.load_state_dict(theirs.state_dict())  # torch -> normlab
    back = torch.nn.Conv2d(3, 5, (3, 2), stride=2, padding=1)
    back.load_state_dict({name: torch.from_numpy(v) for name, v in ours.state_dict().items()})
    for name, value in theirs.state_dict().items():  # -> torch again: the same tensors
        assert torch.equal(back.state_dict()[name], value), name
    assert ours.params["weight"].shape == (3, 2, 3, 5)  # (kH, kW, C_in, C_out) inside
    assert ours.state_dict()["weight"].shape == (5, 3, 3, 2)  # torch's (out, in, kH, kW)

    model = nn.CNN(1, 10, (4, 8), "batch", rng=0)
    copy = nn.CNN(1, 10, (4, 8), "batch", rng=1)
    copy.load_state_dict(torch_cnn(torch, model, np.float32).state_dict())  # torch's init
    copy.load_state_dict(model.state_dict())  # normlab -> normlab, through torch's layouts
    x = random_images(rng, (2, 8, 8, 1), np.float32)
    np.testing.assert_array_equal(copy(x), model(x))


def test_readme_example_of_moving_torch_weights_runs(torch):
    """The README's torch example (a ```py block: it needs torch) runs and prints True."""
    blocks = re.findall(r"```py\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) == 1
    namespace = {"__name__": "__readme__"}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["same"] is True


# ---------------------------------------------------------------------------
# Gradients against finite differences (float64, random upstream gradient)
# ---------------------------------------------------------------------------

GRADCHECK_TOLERANCE = 1e-7


@pytest.mark.parametrize(("cin", "cout", "kernel", "stride", "padding", "bias", "hw"), CONV_CASES)
def test_conv2d_gradients_match_finite_differences(
    rng, cin, cout, kernel, stride, padding, bias, hw
):
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias, rng=rng, dtype=np.float64)
    errors = nl.gradcheck(conv, rng.normal(size=(2, *hw, cin)))
    assert set(errors) == {"input", "weight"} | ({"bias"} if bias else set())
    assert max(errors.values()) < GRADCHECK_TOLERANCE, errors


@pytest.mark.parametrize(("kernel", "stride", "hw"), POOL_CASES)
def test_maxpool2d_gradients_match_finite_differences(rng, kernel, stride, hw):
    x = rng.normal(size=(2, *hw, 3))  # no ties: the max of each window is unique
    errors = nl.gradcheck(nn.MaxPool2d(kernel, stride), x)
    assert errors["input"] < GRADCHECK_TOLERANCE, errors


def test_global_avg_pool_gradients_match_finite_differences(rng):
    errors = nl.gradcheck(nn.GlobalAvgPool2d(), rng.normal(size=(3, 4, 5, 2)))
    assert errors["input"] < GRADCHECK_TOLERANCE, errors


@pytest.mark.parametrize(("norm", "norm_kwargs"), CNN_NORMS)
def test_cnn_gradients_match_finite_differences(rng, norm, norm_kwargs):
    model = nn.CNN(1, 3, (3, 4), norm, rng=rng, norm_kwargs=norm_kwargs, dtype=np.float64)
    for value in model.params.values():  # off the initial γ = 1, β = 0
        value += 0.1 * rng.normal(size=value.shape)
    errors = nl.gradcheck(model, rng.normal(size=(3, 4, 4, 1)))
    assert set(errors) == {"input", *model.params}
    assert max(errors.values()) < GRADCHECK_TOLERANCE, errors


# ---------------------------------------------------------------------------
# The fast Conv2d computes the definition (normlab.reference)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("cin", "cout", "kernel", "stride", "padding", "bias", "hw"), CONV_CASES)
def test_conv2d_computes_the_textbook_definition(rng, cin, cout, kernel, stride, padding, bias, hw):
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias, rng=rng, dtype=np.float64)
    x = rng.normal(size=(2, *hw, cin))
    state = conv.state_dict()  # torch's layout, which the reference takes
    out, cache = reference.conv2d_forward_naive(
        x, state["weight"], state.get("bias"), conv.stride, conv.padding
    )
    np.testing.assert_allclose(conv(x), out, rtol=1e-12, atol=1e-14)
    dout = rng.normal(size=out.shape)
    dx, dweight, dbias = reference.conv2d_backward_naive(dout, cache)
    np.testing.assert_allclose(conv.backward(dout), dx, rtol=1e-12, atol=1e-14)
    gradients = conv.state_dict(grads=True)
    np.testing.assert_allclose(gradients["weight"], dweight, rtol=1e-12, atol=1e-14)
    if bias:
        np.testing.assert_allclose(gradients["bias"], dbias, rtol=1e-12, atol=1e-14)
    else:
        assert dbias is None and "bias" not in gradients


def test_textbook_conv2d_backward_matches_finite_differences(rng):
    x = rng.normal(size=(2, 5, 4, 2))
    weight, bias = rng.normal(size=(3, 2, 3, 2)), rng.normal(size=3)  # (C_out, C_in, kH, kW)
    out, cache = reference.conv2d_forward_naive(x, weight, bias, stride=(2, 1), padding=1)
    dout = rng.normal(size=out.shape)
    analytic = reference.conv2d_backward_naive(dout, cache)

    def loss() -> float:
        return float(np.sum(reference.conv2d_forward_naive(x, weight, bias, (2, 1), 1)[0] * dout))

    for name, value, grad in zip(("x", "weight", "bias"), (x, weight, bias), analytic, strict=True):
        error = relative_error(grad, numerical_gradient(loss, value))
        assert error < GRADCHECK_TOLERANCE, (name, error)


# ---------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------


def test_conv2d_initialization_is_torch_default_and_seeded():
    conv = nn.Conv2d(16, 32, 3, rng=0)
    bound = 1 / np.sqrt(16 * 3 * 3)  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weight and bias
    weight, bias = conv.params["weight"], conv.params["bias"]
    assert weight.dtype == bias.dtype == np.float32
    assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
    assert np.abs(weight).max() > 0.99 * bound  # 4608 draws fill the interval
    uniform_std = bound / np.sqrt(3)
    assert abs(weight.std() - uniform_std) < 0.05 * uniform_std
    np.testing.assert_array_equal(nn.Conv2d(16, 32, 3, rng=0).params["weight"], weight)
    assert not np.array_equal(nn.Conv2d(16, 32, 3, rng=1).params["weight"], weight)


def test_conv2d_on_a_single_position_is_a_linear_map(rng):
    """A 1×1 kernel is Linear applied at every position: the definition, in one line."""
    conv = nn.Conv2d(3, 4, 1, rng=rng, dtype=np.float64)
    x = rng.normal(size=(2, 3, 5, 3))
    expected = x @ conv.params["weight"][0, 0] + conv.params["bias"]
    np.testing.assert_allclose(conv(x), expected, rtol=1e-13)


def test_conv2d_keeps_float32_with_float64_parameters_and_accepts_channels_first_views(rng):
    conv = nn.Conv2d(3, 2, 3, padding=1, rng=0, dtype=np.float64)
    x_channels_first = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    x = np.moveaxis(x_channels_first, 1, -1)  # a strided view, not a copy
    y = conv(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, conv(np.ascontiguousarray(x)), rtol=1e-6)
    assert conv.backward(np.ones_like(y)).dtype == np.float32
    assert conv.grads["weight"].dtype == np.float64  # the parameters' dtype


@pytest.mark.parametrize(
    ("norm", "norm_kwargs", "cancelled"),
    [
        ("batch", {}, True),
        ("instance", {}, True),
        ("group", {"num_groups": 4}, True),  # one channel per group
        ("group", {"num_groups": 2}, False),
        ("layer", {}, False),
        ("rms", {}, False),
        ("none", {}, False),
    ],
)
def test_conv_bias_is_left_out_exactly_where_the_norm_after_it_cancels_it(
    rng, norm, norm_kwargs, cancelled
):
    conv = nn.Conv2d(2, 4, 3, padding=1, rng=rng, dtype=np.float64)
    layer = nl.make_norm(norm, 4, dtype=np.float64, **norm_kwargs)
    x = rng.normal(size=(3, 5, 5, 2))
    before = layer(conv(x))
    conv.params["bias"][...] += rng.normal(0.0, 3.0, size=4)
    changed = not np.allclose(layer(conv(x)), before, rtol=0, atol=1e-12)
    assert changed is not cancelled

    model = nn.CNN(2, 3, (4,), norm, rng=0, norm_kwargs=norm_kwargs)
    assert ("bias" in model[0].params) is not cancelled
    assert "bias" in nn.CNN(2, 3, (4,), "batch", rng=0, conv_bias=True)[0].params
    assert "bias" not in nn.CNN(2, 3, (4,), "layer", rng=0, conv_bias=False)[0].params


def test_cnn_layer_indices_are_the_same_for_every_norm_and_layer_norm_is_per_position():
    for kind in nl.NORM_KINDS:
        names = [type(layer).__name__ for layer in nn.CNN(1, 10, (4, 8), kind, rng=0)]
        assert names[0::4][:2] == ["Conv2d", "Conv2d"] and names[3] == "MaxPool2d"
        assert names[-2:] == ["GlobalAvgPool2d", "Linear"] and len(names) == 10
    model = nn.CNN(1, 10, (4, 8), "layer", rng=0, dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1))
    normalized = model[1](model[0](x))  # (N, H, W, C): one mean per image and position
    np.testing.assert_allclose(normalized.mean(axis=-1), 0, atol=1e-12)
    assert np.abs(normalized.mean(axis=(1, 2))).max() > 0.1  # not one mean per channel
    assert [type(layer).__name__ for layer in nn.CNN(1, 10, (4,), rng=0, pool=False)] == [
        "Conv2d", "BatchNorm", "ReLU", "GlobalAvgPool2d", "Linear",
    ]  # fmt: skip


def test_cnn_config_builds_the_same_network_and_lists_its_fields():
    config = nn.CNNConfig(widths=(4, 8))
    built = config.build("group", rng=3)
    direct = nn.CNN(1, 10, (4, 8), "group", rng=3)
    assert built.config == direct.config == config
    for name, value in direct.params.items():
        np.testing.assert_array_equal(built.params[name], value)
    assert config.to_dict() == {
        "in_channels": 1, "num_classes": 10, "widths": (4, 8), "kernel_size": 3, "pool": True,
    }  # fmt: skip
    assert config.min_image_size == 4


def test_digits_images_are_the_feature_rows_as_8x8_pixels():
    split = load_digits_split()
    images = split.x_train_images
    assert images.shape == (len(split.x_train), 8, 8, 1) and images.dtype == np.float32
    assert np.shares_memory(images, split.x_train)  # a view, nothing copied
    row, column = 3, 5
    np.testing.assert_array_equal(images[:, row, column, 0], split.x_train[:, 8 * row + column])
    assert split.x_test_images.shape == (len(split.x_test), 8, 8, 1)


def test_cnn_learns_the_digits_in_two_epochs():
    """Refuted if a BatchNorm CNN is not clearly above chance (10 %) after two epochs."""
    split = load_digits_split()
    model = nn.CNN(1, 10, (8, 16), "batch", rng=0)
    optimizer = nn.SGD(model.params, model.grads, lr=0.1, momentum=0.9)
    for epoch in range(2):
        for batch in iterate_minibatches(len(split.y_train), 64, rng=epoch):
            _, dlogits = nn.softmax_cross_entropy(
                model(split.x_train_images[batch]), split.y_train[batch]
            )
            model.backward(dlogits)
            optimizer.step()
    model.eval()
    assert nn.accuracy(model(split.x_test_images), split.y_test) > 0.5


# ---------------------------------------------------------------------------
# Bad input: a clear error naming what was expected and what was given
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("kernel_size", 0),
        ("kernel_size", (3, 0)),
        ("kernel_size", (1, 2, 3)),
        ("kernel_size", 1.5),
        ("kernel_size", True),
        ("stride", 0),
        ("stride", -1),
        ("padding", -1),
        ("padding", (0, -2)),
    ],
)
def test_conv2d_rejects_bad_sizes_naming_the_argument_and_the_value(argument, value):
    arguments = {"kernel_size": 3, "stride": 1, "padding": 0, argument: value}
    with pytest.raises(
        ValueError, match=rf"Conv2d: {argument} must be .* got {re.escape(repr(value))}"
    ):
        nn.Conv2d(2, 3, rng=0, **arguments)


@pytest.mark.parametrize("argument", ["in_channels", "out_channels"])
def test_conv2d_rejects_channel_counts_below_one(argument):
    channels = {"in_channels": 2, "out_channels": 3, argument: 0}
    with pytest.raises(ValueError, match=f"{argument} must be a positive integer, got 0"):
        nn.Conv2d(**channels, kernel_size=3, rng=0)


@pytest.mark.parametrize(
    "make", [nn.MaxPool2d, lambda k: nn.MaxPool2d(2, stride=k)], ids=["kernel", "stride"]
)
def test_maxpool2d_rejects_sizes_below_one(make):
    with pytest.raises(ValueError, match=r"MaxPool2d: (kernel_size|stride) must be a positive"):
        make(0)


def test_wrong_channel_count_names_both_numbers_and_the_moveaxis_fix():
    conv = nn.Conv2d(3, 4, 3, rng=0)
    with pytest.raises(ValueError, match=r"in_channels=3, got 5 \(input shape \(2, 6, 6, 5\)\)"):
        conv(np.zeros((2, 6, 6, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"got 6 .*np\.moveaxis\(x, 1, -1\)"):  # channels first
        conv(np.zeros((2, 3, 6, 6), dtype=np.float32))


def test_kernel_larger_than_the_padded_input_names_both_sizes():
    with pytest.raises(ValueError, match=r"kernel_size \(5, 5\) is larger than the padded input"):
        nn.Conv2d(1, 2, 5, padding=1, rng=0)(np.zeros((1, 2, 8, 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"kernel_size \(3, 3\) is larger .* H, W = \(2, 2\)"):
        nn.MaxPool2d(3)(np.zeros((1, 2, 2, 1)))


@pytest.mark.parametrize(
    "module", [nn.Conv2d(1, 2, 1, rng=0), nn.MaxPool2d(2), nn.GlobalAvgPool2d()], ids=repr
)
def test_images_must_have_four_dims_and_a_floating_dtype(module):
    with pytest.raises(
        ValueError, match=r"expects images \(N, H, W, C\), got .* \(4, 4, 1\).*x\[None\]"
    ):
        module(np.zeros((4, 4, 1)))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\), got an array of shape \(4, 1\)"):
        module(np.zeros((4, 1)))
    with pytest.raises(TypeError, match=r"floating-point input, got dtype int64.*astype"):
        module(np.zeros((1, 4, 4, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="takes no padding mask"):
        module(np.zeros((1, 4, 4, 1)), mask=np.ones((1, 4, 4), dtype=bool))


@pytest.mark.parametrize(
    "module", [nn.Conv2d(1, 2, 3, padding=1, rng=0), nn.MaxPool2d(2), nn.GlobalAvgPool2d()],
    ids=repr,
)  # fmt: skip
def test_backward_checks_dy_and_a_failed_forward_keeps_the_last_good_one(module):
    with pytest.raises(RuntimeError, match="backward was called before any forward"):
        module.backward(np.zeros((1, 2)))
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 1)).astype(np.float32)
    y = module(x)
    with pytest.raises(ValueError, match=re.escape(f"{y.shape}, got (7,)")):
        module.backward(np.zeros(7, dtype=np.float32))
    with pytest.raises(TypeError, match="dy"):
        module.backward(np.zeros(y.shape, dtype=np.int64))
    with pytest.raises(ValueError):
        module(np.zeros((4, 4, 1), dtype=np.float32))
    with pytest.raises(TypeError):
        module(np.zeros((2, 4, 4, 1), dtype=np.int64))
    assert module.backward(np.ones_like(y)).shape == x.shape  # the last good forward's


@pytest.mark.parametrize(
    "make", [lambda: nn.Conv2d(1, 2, 3, rng=0), lambda: nn.CNN(1, 3, (2, 4), rng=0)],
    ids=["conv", "cnn"],
)  # fmt: skip
def test_there_is_no_gradient_before_the_first_backward(make, rng):
    module = make()
    assert dict(module.grads) == {}
    with pytest.raises(RuntimeError, match="no gradient"):
        module.state_dict(grads=True)
    y = module(rng.normal(size=(2, 4, 4, 1)).astype(np.float32))
    module.backward(rng.normal(size=y.shape).astype(np.float32))
    assert set(module.state_dict(grads=True)) == set(module.params)  # no buffers


def test_a_conv_weight_replaced_by_the_wrong_shape_is_named_before_any_arithmetic():
    conv = nn.Conv2d(3, 4, 3, rng=0)
    conv.params["weight"] = np.zeros((4, 3, 3, 3), dtype=np.float32)  # torch's layout
    with pytest.raises(ValueError, match=r"params\['weight'\].*\(3, 3, 3, 4\).*\(4, 3, 3, 3\)"):
        conv(np.zeros((1, 5, 5, 3), dtype=np.float32))


def test_load_state_dict_in_the_internal_layout_names_the_expected_torch_shape():
    conv = nn.Conv2d(3, 4, (3, 2), rng=0)
    with pytest.raises(
        ValueError, match=re.escape("weight: expected shape (4, 3, 3, 2), got (3, 2, 3, 4)")
    ):
        conv.load_state_dict({"weight": conv.params["weight"], "bias": conv.params["bias"]})


def test_cnn_rejects_images_too_small_for_its_pools_and_bad_configs():
    model = nn.CNN(1, 10, (4, 8, 8), rng=0)
    with pytest.raises(
        ValueError, match=r"3 pooling blocks needs images of at least 8×8, got H, W = \(4, 4\)"
    ):
        model(np.zeros((2, 4, 4, 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"norm must be one of .* got 'batchnorm'"):
        nn.CNN(1, 10, norm="batchnorm", rng=0)
    with pytest.raises(ValueError, match=r"kernel_size must be odd.*got 4"):
        nn.CNNConfig(kernel_size=4)
    with pytest.raises(ValueError, match=r"widths must be a non-empty tuple .* got \(\)"):
        nn.CNN(1, 10, (), rng=0)
    with pytest.raises(ValueError, match=r"every width \(got \(4, 0\)\) must be a positive"):
        nn.CNNConfig(widths=(4, 0))
    with pytest.raises(ValueError, match="conv_bias must be None, True or False, got 1"):
        nn.CNN(1, 10, rng=0, conv_bias=1)
