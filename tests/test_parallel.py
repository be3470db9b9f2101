"""The simulated data-parallel step (normlab.parallel).

* synchronized BatchNorm over k devices equals BatchNorm over the concatenated batch:
  outputs, loss, the input gradient, every parameter gradient, running statistics -- for
  k = 1 up to one sample per device, for an MLP and for a Container that is not a
  Sequential (SequenceModel), and over a few optimizer steps;
* per-device BatchNorm over k devices equals ghost batches of B/k, running statistics
  included (both average over the devices / ghost batches); ``running_stats=
  "first_device"`` keeps device 0's, as PyTorch DDP does;
* models without BatchNorm give the full-batch result either way;
* bad arguments raise before anything changes; an error on one device does not hang.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import normlab as nl
from normlab import nn
from normlab.gradcheck import relative_error
from normlab.parallel import Devices, data_parallel_step

BATCH_SIZE = 12


def tolerance(dtype) -> float:
    """Float rounding: the devices' sums are added in another order than one long sum."""
    return 1e-5 if dtype == np.float32 else 1e-12


def moved_mlp(norm="batch", *, dtype=np.float64, norm_kwargs=None) -> nn.MLP:
    """A small MLP whose parameters are moved off their initial values (γ = 1, β = 0)."""
    model = nn.MLP(5, 6, 3, norm=norm, rng=0, dtype=dtype, norm_kwargs=norm_kwargs)
    rng = np.random.default_rng(1)
    for value in model.params.values():
        value += (0.1 * rng.normal(size=value.shape)).astype(dtype)
    return model


def batch(dtype=np.float64, batch_size=BATCH_SIZE):
    rng = np.random.default_rng(2)
    x = rng.normal(0.5, 2.0, size=(batch_size, 5)).astype(dtype)
    return x, rng.integers(0, 3, size=batch_size)


def full_batch_step(model, x, targets, loss_fn=nn.softmax_cross_entropy):
    """The single-device reference: one forward and backward on the whole batch."""
    outputs = model(x)
    loss, doutputs = loss_fn(outputs, targets)
    return loss, outputs, model.backward(doutputs)


def assert_same_step(parallel_model, step, reference_model, reference, rtol) -> None:
    loss, outputs, input_grad = reference
    assert abs(step.loss - loss) <= rtol * abs(loss)
    assert relative_error(step.outputs, outputs) <= rtol
    assert relative_error(step.input_grad, input_grad) <= rtol
    assert parallel_model.grads.keys() == reference_model.grads.keys()
    # Relative to the largest gradient entry of the model: a gradient that is 0 in exact
    # arithmetic (a bias right before a centering norm) is rounding noise on either side.
    scale = max(np.max(np.abs(grad)) for grad in reference_model.grads.values())
    for name, grad in reference_model.grads.items():
        difference = np.max(np.abs(parallel_model.grads[name] - grad))
        assert difference <= rtol * scale, f"{name}: {difference / scale:.3g}"
    assert_same_running_stats(parallel_model, reference_model, rtol)


def assert_same_running_stats(model, reference_model, rtol) -> None:
    pairs = [
        (layer, other)
        for layer, other in zip(model.modules(), reference_model.modules(), strict=True)
        if isinstance(layer, nl.BatchNorm)
    ]
    assert pairs
    for layer, other in pairs:
        np.testing.assert_allclose(layer.running_mean, other.running_mean, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(layer.running_var, other.running_var, rtol=rtol)
        assert layer.num_batches_tracked == other.num_batches_tracked


# ---------------------------------------------------------------------------
# Synchronized BatchNorm = BatchNorm over the whole batch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("devices", [1, 2, 3, BATCH_SIZE], ids=lambda k: f"{k}-devices")
def test_sync_batchnorm_equals_batchnorm_over_the_concatenated_batch(dtype, devices):
    model, reference_model = moved_mlp(dtype=dtype), moved_mlp(dtype=dtype)
    x, targets = batch(dtype)
    step = data_parallel_step(model, x, targets, devices=devices, sync_batchnorm=True)
    reference = full_batch_step(reference_model, x, targets)
    assert_same_step(model, step, reference_model, reference, tolerance(dtype))
    assert step.outputs.dtype == dtype and step.input_grad.dtype == dtype


def test_one_device_is_the_single_device_step_bit_for_bit():
    model, reference_model = moved_mlp(), moved_mlp()
    x, targets = batch()
    step = data_parallel_step(model, x, targets, devices=1, sync_batchnorm=True)
    _, outputs, input_grad = full_batch_step(reference_model, x, targets)
    np.testing.assert_array_equal(step.outputs, outputs)
    np.testing.assert_array_equal(step.input_grad, input_grad)
    for name, grad in reference_model.grads.items():
        np.testing.assert_array_equal(model.grads[name], grad)


def test_sync_batchnorm_training_follows_the_single_device_trajectory():
    model, reference_model = moved_mlp(), moved_mlp()
    optimizer = nn.SGD(model.params, model.grads, lr=0.1, momentum=0.9)
    reference_optimizer = nn.SGD(
        reference_model.params, reference_model.grads, lr=0.1, momentum=0.9
    )
    rng = np.random.default_rng(3)
    for _ in range(4):
        x, targets = rng.normal(size=(BATCH_SIZE, 5)), rng.integers(0, 3, size=BATCH_SIZE)
        data_parallel_step(model, x, targets, devices=4, sync_batchnorm=True)
        full_batch_step(reference_model, x, targets)
        optimizer.step()
        reference_optimizer.step()
    for name, value in reference_model.params.items():
        assert relative_error(model.params[name], value) < 1e-12, name
    assert_same_running_stats(model, reference_model, 1e-12)


def test_sync_batchnorm_works_for_any_module_whose_batchnorms_modules_finds():
    """SequenceModel is a Container, not a Sequential: the BatchNorm layers sit in blocks."""

    def sequence_model():
        return nn.SequenceModel(3, 8, 2, rng=0, norm="batch", dtype=np.float64, num_blocks=2)

    model, reference_model = sequence_model(), sequence_model()
    rng = np.random.default_rng(4)
    x, targets = rng.normal(size=(6, 4, 3)), rng.integers(0, 2, size=(6, 4))  # per token
    step = data_parallel_step(model, x, targets, devices=3, sync_batchnorm=True)
    reference = full_batch_step(reference_model, x, targets)
    assert_same_step(model, step, reference_model, reference, 1e-12)


def test_sync_batch_renorm_equals_batch_renorm_over_the_concatenated_batch():
    options = {"r_max": 1.5, "d_max": 0.5}
    model = moved_mlp("batch_renorm", norm_kwargs=options)
    reference_model = moved_mlp("batch_renorm", norm_kwargs=options)
    x, targets = batch()
    step = data_parallel_step(model, x, targets, devices=3, sync_batchnorm=True)
    reference = full_batch_step(reference_model, x, targets)
    corrections = [
        layer.correction for layer in reference_model if isinstance(layer, nl.BatchRenorm)
    ]
    assert any(np.any(correction.d != 0) for correction in corrections)  # the correction acts
    assert_same_step(model, step, reference_model, reference, 1e-12)


# ---------------------------------------------------------------------------
# Per-device BatchNorm = ghost batches of B/k
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("devices", [2, 3, 4], ids=lambda k: f"{k}-devices")  # B/k >= 3
def test_per_device_batchnorm_equals_ghost_batches_of_b_over_k(dtype, devices):
    model = moved_mlp(dtype=dtype)
    ghost_model = moved_mlp(dtype=dtype, norm_kwargs={"ghost_batch_size": BATCH_SIZE // devices})
    x, targets = batch(dtype)
    step = data_parallel_step(model, x, targets, devices=devices)
    reference = full_batch_step(ghost_model, x, targets)
    assert_same_step(model, step, ghost_model, reference, tolerance(dtype))


def test_per_device_batchnorm_differs_from_batchnorm_over_the_whole_batch():
    """The per-device statistics are those of B/k samples: not a no-op."""
    model, reference_model = moved_mlp(), moved_mlp()
    x, targets = batch()
    step = data_parallel_step(model, x, targets, devices=3)
    _, outputs, _ = full_batch_step(reference_model, x, targets)
    assert relative_error(step.outputs, outputs) > 1e-3


def test_first_device_running_stats_are_those_of_device_0s_samples():
    model, device_0 = moved_mlp(), moved_mlp()
    x, targets = batch()
    data_parallel_step(model, x, targets, devices=3, running_stats="first_device")
    full_batch_step(device_0, x[: BATCH_SIZE // 3], targets[: BATCH_SIZE // 3])
    for layer, other in zip(model.modules(), device_0.modules(), strict=True):
        if isinstance(layer, nl.BatchNorm):
            np.testing.assert_array_equal(layer.running_mean, other.running_mean)
            np.testing.assert_array_equal(layer.running_var, other.running_var)


@pytest.mark.parametrize("sync_batchnorm", [False, True])
def test_without_batchnorm_every_device_count_gives_the_full_batch_step(sync_batchnorm):
    model, reference_model = moved_mlp("layer"), moved_mlp("layer")
    x, targets = batch()
    step = data_parallel_step(model, x, targets, devices=4, sync_batchnorm=sync_batchnorm)
    _, outputs, input_grad = full_batch_step(reference_model, x, targets)
    assert relative_error(step.outputs, outputs) < 1e-12
    assert relative_error(step.input_grad, input_grad) < 1e-12
    for name, grad in reference_model.grads.items():
        assert relative_error(model.grads[name], grad) < 1e-12, name


def test_the_step_changes_no_parameter_and_reruns_give_identical_bits():
    model = moved_mlp()
    params_before = {name: value.copy() for name, value in model.params.items()}
    x, targets = batch()
    first = data_parallel_step(copy.deepcopy(model), x, targets, devices=4, sync_batchnorm=True)
    second = data_parallel_step(model, x, targets, devices=4, sync_batchnorm=True)
    np.testing.assert_array_equal(first.outputs, second.outputs)
    np.testing.assert_array_equal(first.input_grad, second.input_grad)
    for name, value in params_before.items():
        np.testing.assert_array_equal(model.params[name], value)
    assert all(
        layer.all_reduce is None for layer in model.modules() if isinstance(layer, nl.BatchNorm)
    )


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_a_batch_that_does_not_split_into_equal_shards_is_rejected():
    model = moved_mlp()
    x, targets = batch(batch_size=10)
    with pytest.raises(ValueError, match=r"10 samples.*4 equal shards.*multiple of 4"):
        data_parallel_step(model, x, targets, devices=4)
    assert len(model.grads) == 0


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"devices": 0}, ValueError, "devices must be a positive integer"),
        ({"devices": 2, "running_stats": "rank0"}, ValueError, "running_stats must be one of"),
    ],
)
def test_bad_options_are_rejected(options, error, pattern):
    x, targets = batch()
    with pytest.raises(error, match=pattern):
        data_parallel_step(moved_mlp(), x, targets, **options)


def test_targets_of_another_length_are_rejected():
    x, targets = batch()
    with pytest.raises(ValueError, match=r"same number of samples.*\(12, 5\).*\(11,\)"):
        data_parallel_step(moved_mlp(), x, targets[:-1], devices=2)


def test_sync_batchnorm_with_ghost_batches_is_rejected():
    model = moved_mlp(norm_kwargs={"ghost_batch_size": 2})
    x, targets = batch()
    with pytest.raises(ValueError, match="ghost_batch_size=None"):
        data_parallel_step(model, x, targets, devices=2, sync_batchnorm=True)


def test_per_device_batchnorm_with_one_sample_per_device_fails_like_batchnorm():
    """With one sample a device has no batch statistics; synchronized, it has all B."""
    x, targets = batch()
    with pytest.raises(ValueError, match=r"more than 1 value per feature.*got 1"):
        data_parallel_step(moved_mlp(), x, targets, devices=BATCH_SIZE)
    step = data_parallel_step(moved_mlp(), x, targets, devices=BATCH_SIZE, sync_batchnorm=True)
    assert np.all(np.isfinite(step.input_grad))


def test_an_error_on_one_device_stops_the_others_waiting_and_is_raised():
    devices = Devices(3)

    def work(rank):
        if rank == 1:
            raise KeyError("device 1 failed")
        return devices.all_reduce(rank, np.ones(2))  # devices 0 and 2 would wait for 1

    with pytest.raises(KeyError, match="device 1 failed"):
        devices.run(work)


def test_all_reduce_gives_every_device_the_same_sum_in_device_order():
    devices = Devices(4)
    values = [np.float32(1e8), np.float32(1.0), np.float32(-1e8), np.float32(1.0)]
    sums = devices.run(lambda rank: devices.all_reduce(rank, values[rank]))
    in_order = ((values[0] + values[1]) + values[2]) + values[3]  # float32 rounding included
    assert sums == [in_order] * 4
