"""The textbook reference (normlab.reference) against the layers, finite differences and torch.

* the layers compute what the textbook functions compute (float64; with and without a
  padding mask; BatchNorm in training and eval mode, and its running statistics);
* every textbook backward against central differences, with a random upstream gradient;
* when torch is installed, every textbook layer against ``torch.nn``;
* the module's own example runs.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from conftest import build_layer, reference_pass

from normlab import reference
from normlab.gradcheck import numerical_gradient, relative_error

FLOAT64_RTOL = 1e-12
#: A right backward measures about 1e-9 here; a missing term, 1e-2 or more.
GRADCHECK_TOLERANCE = 1e-7
SEQUENCES = (4, 5, 6)  # (N, T, D)
IMAGES = (2, 3, 4, 6)  # (N, H, W, C)


def padding_mask(rng, shape) -> np.ndarray:
    """A scattered (N, ...) padding mask with a real token in every sample."""
    mask = rng.random(shape) < 0.6
    mask.reshape(shape[0], -1)[:, 0] = True
    return mask


def assert_close(actual, expected, rtol=FLOAT64_RTOL, atol=1e-13, what="") -> None:
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------------------
# The layers compute the textbook numbers
# ---------------------------------------------------------------------------

LAYER_CASES = [
    ("batch", SEQUENCES),
    ("batch", IMAGES),
    ("layer", SEQUENCES),
    ("rms", SEQUENCES),
    ("group", SEQUENCES),
    ("group", IMAGES),
]


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("kind", "x_shape"), LAYER_CASES)
def test_layers_compute_the_textbook_forward_and_backward(kind, x_shape, training, use_mask, rng):
    layer = build_layer(kind, rng=rng)
    for _ in range(2):  # BatchNorm: running statistics away from 0 and 1
        layer(rng.normal(1.0, 2.0, size=x_shape))
    layer.train(training)
    x = rng.normal(1.0, 2.0, size=x_shape)
    dy = rng.normal(size=x_shape)
    mask = padding_mask(rng, x_shape[:-1]) if use_mask else None
    expected_y, expected_dx, expected_grads = reference_pass(layer, x, dy, mask)
    y = layer(x, mask=mask)
    dx = layer.backward(dy)
    assert_close(y, expected_y, what="y")
    assert_close(dx, expected_dx, what="dx")
    assert set(layer.grads) == set(expected_grads)
    for name, grad in expected_grads.items():
        assert_close(layer.grads[name], grad, what=name)


def test_layernorm_and_rmsnorm_over_two_trailing_axes(rng):
    """normalized_shape = (T, D): one statistic per sample (no mask: the textbook version
    would count padded tokens in such a statistic, the layers do not)."""
    x, dy = rng.normal(1.0, 2.0, size=SEQUENCES), rng.normal(size=SEQUENCES)
    for kind in ("layer", "rms"):
        layer = build_layer(kind, SEQUENCES[1:], rng=rng)
        expected_y, expected_dx, expected_grads = reference_pass(layer, x, dy)
        assert_close(layer(x), expected_y, what=f"{kind} y")
        assert_close(layer.backward(dy), expected_dx, what=f"{kind} dx")
        for name, grad in expected_grads.items():
            assert_close(layer.grads[name], grad, what=f"{kind} {name}")


@pytest.mark.parametrize("x_shape", [SEQUENCES, IMAGES], ids=["NTC", "NHWC"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
def test_instance_norm_is_groupnorm_with_one_channel_per_group(x_shape, use_mask, rng):
    channels = x_shape[-1]
    layer = build_layer("group", channels, rng=rng, num_groups=channels)
    x, dy = rng.normal(1.0, 2.0, size=x_shape), rng.normal(size=x_shape)
    mask = padding_mask(rng, x_shape[:-1]) if use_mask else None
    weight, bias = layer.params["weight"], layer.params["bias"]
    out, cache = reference.instance_norm_forward(x, weight, bias, layer.eps, mask=mask)
    dx, dweight, dbias = reference.instance_norm_backward(dy, cache)
    assert_close(layer(x, mask=mask), out, what="y")
    assert_close(layer.backward(dy), dx, what="dx")
    assert_close(layer.grads["weight"], dweight, what="weight")
    assert_close(layer.grads["bias"], dbias, what="bias")


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_running_statistics_follow_the_textbook_update(momentum, use_mask, rng):
    layer = build_layer("batch", rng=rng, momentum=momentum)
    running_mean, running_var, num_batches_tracked = np.zeros(6), np.ones(6), 0
    for batch_size in (5, 3, 8):  # with momentum=None every batch weighs the same
        x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 3), size=(batch_size, 4, 6))
        mask = padding_mask(rng, x.shape[:-1]) if use_mask else None
        layer(x, mask=mask)
        running_mean, running_var, num_batches_tracked = reference.batch_norm_running_stats(
            x, running_mean, running_var, num_batches_tracked, momentum, mask=mask
        )
        assert_close(layer.running_mean, running_mean, what="running_mean")
        assert_close(layer.running_var, running_var, what="running_var")
        assert layer.num_batches_tracked == num_batches_tracked


# ---------------------------------------------------------------------------
# Every textbook backward against finite differences
# ---------------------------------------------------------------------------


def textbook_forward(name: str, x, weight, bias, mask):
    """One textbook forward, as a function of the arrays its gradients are taken of."""
    if name == "batch":
        return reference.batch_norm_forward(x, weight, bias, mask=mask)
    if name == "batch_eval":
        running_mean, running_var = np.linspace(-1.0, 1.0, 6), np.linspace(0.5, 2.0, 6)
        return reference.batch_norm_eval_forward(
            x, running_mean, running_var, weight, bias, mask=mask
        )
    if name == "layer":
        return reference.layer_norm_forward(x, weight, bias, mask=mask)
    if name == "rms":
        return reference.rms_norm_forward(x, weight, eps=1e-3, mask=mask)
    if name == "group":
        return reference.group_norm_forward(x, 2, weight, bias, mask=mask)
    return reference.instance_norm_forward(x, weight, bias, mask=mask)


TEXTBOOK_BACKWARD = {
    "batch": reference.batch_norm_backward,
    "batch_eval": reference.batch_norm_eval_backward,
    "layer": reference.layer_norm_backward,
    "rms": reference.rms_norm_backward,
    "group": reference.group_norm_backward,
    "instance": reference.instance_norm_backward,
}


@pytest.mark.parametrize("use_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("name", TEXTBOOK_BACKWARD)
def test_textbook_backward_matches_finite_differences(name, use_mask, rng):
    x_shape = (3, 4, 6)  # (N, T, C): GroupNorm in 2 groups of 3
    x = rng.normal(0.5, 2.0, size=x_shape)
    weight, bias = rng.uniform(0.5, 2.0, size=6), rng.normal(size=6)
    mask = padding_mask(rng, x_shape[:-1]) if use_mask else None
    upstream = rng.normal(size=x_shape)  # random: sum(BatchNorm(x)) would hide bugs

    def loss() -> float:
        return float(np.sum(textbook_forward(name, x, weight, bias, mask)[0] * upstream))

    _, cache = textbook_forward(name, x, weight, bias, mask)
    gradients = TEXTBOOK_BACKWARD[name](upstream, cache)  # (dx, dweight[, dbias])
    analytic = dict(zip(("x", "weight", "bias"), gradients, strict=False))
    for what, array in {"x": x, "weight": weight, "bias": bias}.items():
        if what in analytic:  # RMSNorm has no bias
            error = relative_error(analytic[what], numerical_gradient(loss, array))
            assert error < GRADCHECK_TOLERANCE, f"{name} d{what}: relative error {error:.2g}"
    if mask is not None:
        assert not np.any(analytic["x"][~mask])


# ---------------------------------------------------------------------------
# The textbook layers against torch.nn
# ---------------------------------------------------------------------------


def torch_pass(torch, module, x, dy, *, channels_first: bool):
    """Output, input gradient, dweight and dbias of a torch module, features-last."""
    to_torch, from_torch = np.asarray, np.asarray
    if channels_first:  # torch's (N, C, ...) layout for BatchNorm, GroupNorm, InstanceNorm

        def to_torch(array):
            return np.ascontiguousarray(np.moveaxis(array, -1, 1))

        def from_torch(array):
            return np.moveaxis(array, 1, -1)

    module.zero_grad()
    x_torch = torch.tensor(to_torch(x), requires_grad=True)
    y = module(x_torch)
    y.backward(torch.tensor(to_torch(dy)))
    grads = [module.weight.grad.numpy()]
    if getattr(module, "bias", None) is not None:  # RMSNorm has none
        grads.append(module.bias.grad.numpy())
    return from_torch(y.detach().numpy()), from_torch(x_torch.grad.numpy()), *grads


def with_parameters(torch, module, weight, bias=None):
    """``module`` with the given weight (and bias), copied in."""
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weight))
        if bias is not None:
            module.bias.copy_(torch.from_numpy(bias))
    return module


def assert_same_results(ours, theirs, layer_name: str) -> None:
    """(y, dx, dweight[, dbias]) of the textbook layer against torch's."""
    assert len(ours) == len(theirs)
    for what, mine, torchs in zip(("y", "dx", "dweight", "dbias"), ours, theirs, strict=False):
        assert_close(mine, torchs, what=f"{layer_name} {what}")


@pytest.mark.parametrize("x_shape", [SEQUENCES, IMAGES], ids=["NTC", "NHWC"])
def test_textbook_batch_norm_matches_torch_in_both_modes(torch, x_shape, rng):
    features = x_shape[-1]
    batch_norm_class = torch.nn.BatchNorm1d if len(x_shape) == 3 else torch.nn.BatchNorm2d
    weight, bias = rng.uniform(0.5, 2.0, size=features), rng.normal(size=features)
    module = with_parameters(torch, batch_norm_class(features, dtype=torch.float64), weight, bias)
    running_mean, running_var, num_batches_tracked = np.zeros(features), np.ones(features), 0
    for _ in range(3):
        x, dy = rng.normal(1.0, 2.0, size=x_shape), rng.normal(size=x_shape)
        theirs = torch_pass(torch, module, x, dy, channels_first=True)
        out, cache = reference.batch_norm_forward(x, weight, bias)
        assert_same_results((out, *reference.batch_norm_backward(dy, cache)), theirs, "train")
        running_mean, running_var, num_batches_tracked = reference.batch_norm_running_stats(
            x, running_mean, running_var, num_batches_tracked
        )
        assert_close(running_mean, module.running_mean.numpy(), what="running_mean")
        assert_close(running_var, module.running_var.numpy(), what="running_var")
        assert num_batches_tracked == int(module.num_batches_tracked)

    module.eval()
    x, dy = rng.normal(1.0, 2.0, size=x_shape), rng.normal(size=x_shape)
    theirs = torch_pass(torch, module, x, dy, channels_first=True)
    out, cache = reference.batch_norm_eval_forward(x, running_mean, running_var, weight, bias)
    assert_same_results((out, *reference.batch_norm_eval_backward(dy, cache)), theirs, "eval")


def test_textbook_cumulative_average_matches_torch_momentum_none(torch, rng):
    module = torch.nn.BatchNorm1d(6, momentum=None, dtype=torch.float64)
    running_mean, running_var, num_batches_tracked = np.zeros(6), np.ones(6), 0
    for batch_size in (5, 12, 3):
        x = rng.normal(rng.uniform(-3, 3), rng.uniform(0.5, 3), size=(batch_size, 6))
        module(torch.tensor(x))
        running_mean, running_var, num_batches_tracked = reference.batch_norm_running_stats(
            x, running_mean, running_var, num_batches_tracked, momentum=None
        )
    assert_close(running_mean, module.running_mean.numpy(), what="running_mean")
    assert_close(running_var, module.running_var.numpy(), what="running_var")


@pytest.mark.parametrize("normalized_ndim", [1, 2], ids=["D", "(T,D)"])
def test_textbook_layer_norm_and_rms_norm_match_torch(torch, normalized_ndim, rng):
    normalized_shape = SEQUENCES[len(SEQUENCES) - normalized_ndim :]
    x, dy = rng.normal(1.0, 2.0, size=SEQUENCES), rng.normal(size=SEQUENCES)
    weight, bias = rng.uniform(0.5, 2.0, size=normalized_shape), rng.normal(size=normalized_shape)

    layer_norm = torch.nn.LayerNorm(normalized_shape, dtype=torch.float64)
    layer_norm = with_parameters(torch, layer_norm, weight, bias)
    out, cache = reference.layer_norm_forward(x, weight, bias)
    assert_same_results(
        (out, *reference.layer_norm_backward(dy, cache)),
        torch_pass(torch, layer_norm, x, dy, channels_first=False),
        "LayerNorm",
    )
    rms_norm = torch.nn.RMSNorm(normalized_shape, dtype=torch.float64)  # eps=None, as ours
    rms_norm = with_parameters(torch, rms_norm, weight)
    out, cache = reference.rms_norm_forward(x, weight)
    assert_same_results(
        (out, *reference.rms_norm_backward(dy, cache)),
        torch_pass(torch, rms_norm, x, dy, channels_first=False),
        "RMSNorm",
    )


@pytest.mark.parametrize("x_shape", [SEQUENCES, IMAGES], ids=["NTC", "NHWC"])
def test_textbook_group_norm_and_instance_norm_match_torch(torch, x_shape, rng):
    channels = x_shape[-1]
    x, dy = rng.normal(1.0, 2.0, size=x_shape), rng.normal(size=x_shape)
    weight, bias = rng.uniform(0.5, 2.0, size=channels), rng.normal(size=channels)

    group_norm = torch.nn.GroupNorm(2, channels, dtype=torch.float64)
    group_norm = with_parameters(torch, group_norm, weight, bias)
    out, cache = reference.group_norm_forward(x, 2, weight, bias)
    assert_same_results(
        (out, *reference.group_norm_backward(dy, cache)),
        torch_pass(torch, group_norm, x, dy, channels_first=True),
        "GroupNorm",
    )
    instance_norm_class = torch.nn.InstanceNorm1d if len(x_shape) == 3 else torch.nn.InstanceNorm2d
    instance_norm = instance_norm_class(channels, affine=True, dtype=torch.float64)
    instance_norm = with_parameters(torch, instance_norm, weight, bias)
    out, cache = reference.instance_norm_forward(x, weight, bias)
    assert_same_results(
        (out, *reference.instance_norm_backward(dy, cache)),
        torch_pass(torch, instance_norm, x, dy, channels_first=True),
        "InstanceNorm",
    )


# ---------------------------------------------------------------------------
# The page a student reads first
# ---------------------------------------------------------------------------


def test_the_module_example_runs():
    results = doctest.testmod(reference)
    assert results.attempted > 0
    assert results.failed == 0
