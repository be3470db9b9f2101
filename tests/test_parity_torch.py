"""Parity with torch.nn: forward, dx, dweight, dbias, running statistics, then eval mode.

normlab is features-last and torch channels-first, so BatchNorm and GroupNorm inputs
go to torch through ``np.moveaxis(x, -1, 1)``: normlab's BatchNorm on (N, C), (N, L, C)
and (N, H, W, C) is torch's BatchNorm1d on (N, C), (N, C, L) and BatchNorm2d on
(N, C, H, W). LayerNorm and RMSNorm normalize the trailing axes in both libraries.

Each case runs several training steps with a fresh input and a random upstream gradient
(never ``sum()``: the gradient of sum(BatchNorm(x)) is 0 and hides bugs), comparing
everything after every step, then switches both layers to eval mode and compares again.

Errors are measured relative to the largest entry of the torch value. The largest errors
measured over all cases here were 1.6e-15 (float64) and 9.5e-7 (float32); the tolerances
leave headroom for other BLAS builds and summation orders, yet no real difference in
the maths could pass. Cases where dx is pure cancellation noise (two values per
statistic: x̂ = ±1 and dx ≈ 0 up to eps) are left out: there the "relative error" of
either library is meaningless.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_layer

import normlab as nl

DTYPES = (np.float32, np.float64)
#: largest allowed max|ours - torch| / max|torch|, per dtype
RELATIVE_TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-13}
TRAINING_STEPS = 4
CHANNELS_FIRST_IN_TORCH = ("batch", "group", "instance")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def torch_dtype(torch, dtype):
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[
        np.dtype(dtype)
    ]


def to_torch(torch, array: np.ndarray, kind: str):
    """Features-last numpy array -> the layout torch's layer expects (a new tensor)."""
    if kind in CHANNELS_FIRST_IN_TORCH:
        array = np.moveaxis(array, -1, 1)
    return torch.tensor(np.ascontiguousarray(array))


def from_torch(tensor, kind: str) -> np.ndarray:
    array = tensor.detach().numpy()
    if kind in CHANNELS_FIRST_IN_TORCH:
        array = np.moveaxis(array, 1, -1)
    return array


def build_torch_layer(torch, kind: str, x_ndim: int, size, options: dict, dtype):
    """torch's counterpart of ``build_layer(kind, size, **options)``, with the same γ/β."""
    tdtype = torch_dtype(torch, dtype)
    options = dict(options)
    if kind == "batch":
        batchnorm = torch.nn.BatchNorm2d if x_ndim == 4 else torch.nn.BatchNorm1d
        return batchnorm(size, dtype=tdtype, **options)
    if kind == "layer":
        return torch.nn.LayerNorm(size, dtype=tdtype, **options)
    if kind == "rms":
        return torch.nn.RMSNorm(size, dtype=tdtype, **options)
    if kind == "instance":
        instancenorm = torch.nn.InstanceNorm2d if x_ndim == 4 else torch.nn.InstanceNorm1d
        return instancenorm(size, dtype=tdtype, **options)
    num_groups = options.pop("num_groups")
    return torch.nn.GroupNorm(num_groups, size, dtype=tdtype, **options)


def copy_params_to_torch(torch, ours, theirs) -> None:
    """Our parameters and buffers into the torch layer through state_dict (same names)."""
    assert {name for name, _ in theirs.named_parameters()} == set(ours.params)
    theirs.load_state_dict({name: torch.from_numpy(v) for name, v in ours.state_dict().items()})


def assert_close_to_torch(ours, theirs, what: str) -> None:
    """Same shape and dtype, and max|ours - theirs| within tolerance of max|theirs|."""
    expected = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == expected.shape, what
    assert ours.dtype == expected.dtype, what
    scale = max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(expected.dtype).tiny)
    error = float(np.max(np.abs(ours.astype(np.float64) - expected), initial=0.0)) / scale
    tolerance = RELATIVE_TOLERANCE[expected.dtype]
    assert error <= tolerance, f"{what}: relative error {error:.3g} > {tolerance:.0e}"


def random_input(rng, shape, dtype) -> np.ndarray:
    """Features with different means and scales, so centering and scaling both matter."""
    offsets = rng.normal(0.0, 2.0, size=shape[-1])
    scales = rng.uniform(0.5, 3.0, size=shape[-1])
    return (rng.normal(size=shape) * scales + offsets).astype(dtype)


def compare_one_step(torch, kind, ours, theirs, x, dy) -> None:
    y = ours(x)
    dx = ours.backward(dy)

    x_torch = to_torch(torch, x, kind).requires_grad_(True)
    theirs.zero_grad(set_to_none=True)
    y_torch = theirs(x_torch)
    y_torch.backward(to_torch(torch, dy, kind))

    assert_close_to_torch(y, from_torch(y_torch, kind), "output")
    assert_close_to_torch(dx, from_torch(x_torch.grad, kind), "dx")
    for name in ours.params:
        assert_close_to_torch(ours.grads[name], getattr(theirs, name).grad, f"d{name}")
    gradients = ours.state_dict(grads=True)
    assert set(gradients) == {name for name, _ in theirs.named_parameters()}
    for name, parameter in theirs.named_parameters():
        assert_close_to_torch(gradients[name], parameter.grad, f"state_dict(grads=True)[{name}]")


def compare_running_stats(ours, theirs) -> None:
    """The whole state_dict: the same names, then the same values (running statistics too)."""
    state, expected = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(expected)
    for name, value in expected.items():
        if name == "num_batches_tracked":
            assert state[name].dtype == np.int64 and int(state[name]) == int(value)
        else:
            assert_close_to_torch(state[name], value, name)
    if isinstance(ours, nl.BatchNorm) and theirs.running_mean is None:  # no running stats
        assert ours.running_mean is None and ours.running_var is None


def check_parity(torch, rng, kind, x_shape, size, options, dtype) -> None:
    ours = build_layer(kind, size, dtype=dtype, rng=rng, **options)
    theirs = build_torch_layer(torch, kind, len(x_shape), size, options, dtype)
    copy_params_to_torch(torch, ours, theirs)
    assert ours.training and theirs.training

    for _ in range(TRAINING_STEPS):
        x = random_input(rng, x_shape, dtype)
        dy = rng.normal(size=x_shape).astype(dtype)
        compare_one_step(torch, kind, ours, theirs, x, dy)
        compare_running_stats(ours, theirs)

    assert ours.eval() is ours
    theirs.eval()
    x = random_input(rng, x_shape, dtype)
    dy = rng.normal(size=x_shape).astype(dtype)
    compare_one_step(torch, kind, ours, theirs, x, dy)
    compare_running_stats(ours, theirs)  # eval mode must not touch the running statistics


# ---------------------------------------------------------------------------
# Cases: (x shape features-last, num_features / normalized_shape, constructor options)
# ---------------------------------------------------------------------------

BATCHNORM_CASES = [
    pytest.param(shape, shape[-1], {"momentum": momentum}, id=f"{name}-momentum={momentum}")
    for name, shape in [("NC", (16, 5)), ("NLC", (6, 7, 5)), ("NHWC", (3, 4, 5, 6))]
    for momentum in (0.1, 0.5, None)
] + [
    pytest.param((6, 7, 5), 5, {"affine": False}, id="NLC-affine=False"),
    pytest.param((3, 4, 5, 6), 6, {"track_running_stats": False}, id="NHWC-no-running-stats"),
    pytest.param((16, 5), 5, {"track_running_stats": False, "momentum": None}, id="NC-no-stats"),
    pytest.param((3, 5), 5, {"eps": 1e-3, "momentum": 1.0}, id="NC-batch-of-3-eps=1e-3-m=1"),
    pytest.param((6, 7, 5), 5, {"bias": False}, id="NLC-bias=False"),
]

LAYERNORM_CASES = [
    pytest.param((8, 10), 10, {}, id="ND"),
    pytest.param((3, 5, 10), 10, {}, id="NTD"),
    pytest.param((3, 5, 10), (5, 10), {}, id="NTD-shape=(T,D)"),
    pytest.param((2, 3, 4, 5), (4, 5), {"eps": 1e-3}, id="NHWC-shape=(W,C)-eps=1e-3"),
    pytest.param((3, 5, 10), 10, {"bias": False}, id="NTD-bias=False"),
    pytest.param((3, 5, 10), 10, {"elementwise_affine": False}, id="NTD-affine=False"),
    pytest.param((3, 5, 10), 10, {"eps": 0.0}, id="NTD-eps=0"),
]

RMSNORM_CASES = [
    pytest.param((8, 10), 10, {}, id="ND-eps=None"),
    pytest.param((3, 5, 10), 10, {"eps": None}, id="NTD-eps=None"),
    pytest.param((3, 5, 10), (5, 10), {}, id="NTD-shape=(T,D)-eps=None"),
    pytest.param((3, 5, 10), 10, {"eps": 1e-6}, id="NTD-eps=1e-6"),
    pytest.param((3, 5, 10), 10, {"elementwise_affine": False}, id="NTD-affine=False"),
    pytest.param((3, 5, 10), 10, {"eps": 0.0}, id="NTD-eps=0"),
]

GROUPNORM_CASES = [
    pytest.param((4, 6), 6, {"num_groups": 2}, id="NC-G=2"),
    pytest.param((3, 7, 6), 6, {"num_groups": 2}, id="NLC-G=2"),
    pytest.param((2, 4, 5, 6), 6, {"num_groups": 3}, id="NHWC-G=3"),
    pytest.param((2, 4, 5, 6), 6, {"num_groups": 1}, id="NHWC-G=1"),
    pytest.param((2, 4, 5, 6), 6, {"num_groups": 6}, id="NHWC-G=C-instance-norm"),
    pytest.param((3, 7, 6), 6, {"num_groups": 2, "affine": False}, id="NLC-affine=False"),
    pytest.param((3, 7, 6), 6, {"num_groups": 2, "eps": 1e-3}, id="NLC-eps=1e-3"),
    pytest.param((3, 7, 6), 6, {"num_groups": 2, "bias": False}, id="NLC-bias=False"),
    pytest.param((3, 7, 6), 6, {"num_groups": 3, "eps": 0.0}, id="NLC-eps=0"),
]

INSTANCENORM_CASES = [
    pytest.param((3, 7, 6), 6, {"affine": False}, id="NLC"),
    pytest.param((2, 4, 5, 6), 6, {"affine": False}, id="NHWC"),
    pytest.param((2, 4, 5, 6), 6, {"affine": True}, id="NHWC-affine"),
    pytest.param((3, 7, 6), 6, {"affine": True, "bias": False, "eps": 1e-3}, id="NLC-no-bias"),
]

dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])


@dtypes
@pytest.mark.parametrize(("x_shape", "size", "options"), BATCHNORM_CASES)
def test_batchnorm_matches_torch(torch, rng, x_shape, size, options, dtype):
    check_parity(torch, rng, "batch", x_shape, size, options, dtype)


@dtypes
@pytest.mark.parametrize(("x_shape", "size", "options"), LAYERNORM_CASES)
def test_layernorm_matches_torch(torch, rng, x_shape, size, options, dtype):
    check_parity(torch, rng, "layer", x_shape, size, options, dtype)


@dtypes
@pytest.mark.parametrize(("x_shape", "size", "options"), RMSNORM_CASES)
def test_rmsnorm_matches_torch(torch, rng, x_shape, size, options, dtype):
    check_parity(torch, rng, "rms", x_shape, size, options, dtype)


@dtypes
@pytest.mark.parametrize(("x_shape", "size", "options"), GROUPNORM_CASES)
def test_groupnorm_matches_torch(torch, rng, x_shape, size, options, dtype):
    check_parity(torch, rng, "group", x_shape, size, options, dtype)


@dtypes
@pytest.mark.parametrize(("x_shape", "size", "options"), INSTANCENORM_CASES)
def test_instancenorm_matches_torch(torch, rng, x_shape, size, options, dtype):
    check_parity(torch, rng, "instance", x_shape, size, options, dtype)


@dtypes
def test_batchnorm_frozen_by_switching_track_running_stats_off_follows_torch(torch, rng, dtype):
    """Built with running statistics, then track_running_stats = False: eval uses the buffers."""
    ours = build_layer("batch", 5, dtype=dtype, rng=rng)
    theirs = build_torch_layer(torch, "batch", 3, 5, {}, dtype)
    copy_params_to_torch(torch, ours, theirs)
    compare_one_step(
        torch,
        "batch",
        ours,
        theirs,
        random_input(rng, (6, 7, 5), dtype),
        rng.normal(size=(6, 7, 5)).astype(dtype),
    )
    ours.track_running_stats = theirs.track_running_stats = False
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        x = random_input(rng, (6, 7, 5), dtype)
        compare_one_step(torch, "batch", ours, theirs, x, rng.normal(size=x.shape).astype(dtype))
        compare_running_stats(ours, theirs)


@dtypes
def test_batchnorm_without_running_stats_uses_batch_statistics_in_eval_like_torch(
    torch, rng, dtype
):
    """track_running_stats=False: eval mode still normalizes with the batch's statistics."""
    ours = build_layer("batch", 5, dtype=dtype, rng=rng, track_running_stats=False).eval()
    theirs = build_torch_layer(torch, "batch", 3, 5, {"track_running_stats": False}, dtype)
    copy_params_to_torch(torch, ours, theirs)
    theirs.eval()
    x = random_input(rng, (6, 7, 5), dtype)
    compare_one_step(torch, "batch", ours, theirs, x, rng.normal(size=x.shape).astype(dtype))
    y = ours(x)
    np.testing.assert_allclose(y.mean(axis=(0, 1)), ours.params["bias"], atol=1e-5)
