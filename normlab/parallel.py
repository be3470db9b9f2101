"""Data parallelism, simulated on one machine: k devices, one model replica each.

In data-parallel training (PyTorch's ``DistributedDataParallel``, DDP) every device
holds a copy of the model and runs the forward and backward pass on its own B/k
samples of the batch; the parameter gradients are then averaged over the devices,
so that one optimizer step keeps the copies identical. BatchNorm is the only layer
in which the samples of different devices meet, and there are two ways to run it:

* **per-device BatchNorm** (``sync_batchnorm=False``, DDP's default): each device
  normalizes with the statistics of its own B/k samples. The statistics batch is
  B/k while SGD averages over all B, which is exactly what ghost batches compute on
  one device: ``BatchNorm(ghost_batch_size=B // k)``.
* **synchronized BatchNorm** (``sync_batchnorm=True``, ``torch.nn.SyncBatchNorm``):
  every sum behind the mean and the variance, and the backward's two sums, run over
  all devices (one all-reduce each, see :func:`normlab.functional.moments`), so the
  result is BatchNorm over the whole batch of B samples.

Each device runs in a thread of its own, as each GPU runs a process of its own, and
the devices meet only in :meth:`Devices.all_reduce`: it waits until every device has
contributed its array and gives each the same sum, added in device order, so that a
rerun gives the same bits.

Running statistics. With synchronized BatchNorm every device computes the same
statistics, so every replica's running averages are the same and are kept. With
per-device BatchNorm each device updates its own from its own B/k samples; what the
model keeps is ``running_stats="average"`` (the default: the mean over the devices,
which is what ghost batches of B/k keep) or ``running_stats="first_device"``
(device 0's, which is what PyTorch DDP ends up with: by default it broadcasts rank
0's buffers to every device at the start of each forward).

Example
-------
>>> import numpy as np
>>> from normlab import nn
>>> from normlab.parallel import data_parallel_step
>>> rng = np.random.default_rng(0)
>>> model = nn.MLP(4, 8, 3, norm="batch", rng=0)
>>> x, y = rng.normal(size=(12, 4)), rng.integers(0, 3, size=12)
>>> step = data_parallel_step(model, x, y, devices=3, sync_batchnorm=True)
>>> step.outputs.shape, sorted(model.grads)[:2]   # model.grads: averaged over the devices
((12, 3), ['0.weight', '1.bias'])
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from normlab.layers import BatchNorm
from normlab.module import Container, Module, as_float_array, check_positive_int
from normlab.nn.losses import softmax_cross_entropy

__all__ = ["Devices", "ParallelStep", "data_parallel_step"]

RUNNING_STATS_CHOICES = ("average", "first_device")

#: How long a device waits in an all-reduce for the others before giving up. Every device
#: runs the same layers, so they all reach each all-reduce; this only turns a bug into an
#: error instead of a program that waits forever.
ALL_REDUCE_TIMEOUT_SECONDS = 120.0


class Devices:
    """``count`` simulated devices that run the same work at once and meet in :meth:`all_reduce`.

    >>> devices = Devices(3)
    >>> devices.run(lambda rank: devices.all_reduce(rank, np.array([rank, 10 * rank])))
    [array([ 3, 30]), array([ 3, 30]), array([ 3, 30])]
    """

    def __init__(self, count: int) -> None:
        self.count = check_positive_int(count, "devices", "Devices")
        self._barrier = threading.Barrier(self.count, timeout=ALL_REDUCE_TIMEOUT_SECONDS)
        self._contributions: list = [None] * self.count

    def all_reduce(self, rank: int, value):
        """The sum of ``value`` over all devices, for the device ``rank``; every device gets it.

        Blocks until every device has called it. The sum is added in device order
        (0, 1, ..., k-1) on every device, so all get identical bits.
        """
        self._contributions[rank] = value
        self._barrier.wait()  # every device has contributed
        total = self._contributions[0]
        for contribution in self._contributions[1:]:
            total = total + contribution
        self._barrier.wait()  # every device has read the sum before any contributes again
        return total

    def run(self, work: Callable[[int], object]) -> list:
        """``work(rank)`` on every device, each in its own thread; the results in device order.

        If a device raises, the others stop waiting for it and the first error (in
        device order) is raised here.
        """
        results: list = [None] * self.count
        errors: list = [None] * self.count

        def device(rank: int) -> None:
            try:
                results[rank] = work(rank)
            except BaseException as error:
                errors[rank] = error
                self._barrier.abort()  # the other devices stop waiting for this one

        threads = [
            threading.Thread(target=device, args=(rank,), name=f"device {rank}")
            for rank in range(self.count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # A device that only saw the others give up reports BrokenBarrierError: the cause
        # is the error of the device that gave up first.
        causes = [
            e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)
        ]
        failed = causes or [error for error in errors if error is not None]
        if failed:
            raise failed[0]
        return results


class ParallelStep(NamedTuple):
    """What :func:`data_parallel_step` computed for the whole batch of B samples."""

    loss: float  # the mean of the devices' losses: the loss of the whole batch
    outputs: np.ndarray  # (B, ...): the devices' outputs, concatenated in device order
    input_grad: np.ndarray  # (B, ...): the gradient of ``loss`` with respect to x


def data_parallel_step(
    model: Module,
    x,
    targets,
    loss_fn: Callable = softmax_cross_entropy,
    *,
    devices: int,
    sync_batchnorm: bool = False,
    running_stats: str = "average",
) -> ParallelStep:
    """One data-parallel forward and backward of ``model`` on ``devices`` simulated devices.

    The batch is split into ``devices`` equal, consecutive shards; device k runs a copy
    of ``model`` (same parameters, same buffers, same mode) on shard k, computes
    ``loss_k, doutputs_k = loss_fn(outputs_k, targets_k)`` and runs the backward from
    ``doutputs_k``. Then, as DDP does:

    .. math::  \\nabla_\\theta L = \\frac{1}{k} \\sum_{j=1}^{k} \\nabla_\\theta L_j,
        \\qquad L = \\frac{1}{k} \\sum_j L_j

    The averaged gradients are left in ``model.grads`` (ready for an optimizer
    step) and the running statistics of every BatchNorm layer in ``model`` are
    updated as described in :mod:`normlab.parallel`. With a mean loss over equal
    shards, L is the mean loss of the whole batch, and with ``sync_batchnorm=True``
    everything equals one forward and backward of ``model`` on the whole batch.

    Parameters
    ----------
    model : Module
        Any normlab module; its BatchNorm layers are found with ``model.modules()``.
        Every other layer must treat samples independently (as Linear, the
        activations, LayerNorm, GroupNorm do).
    x : float ndarray (B, ...), features-last; B must be a multiple of ``devices``.
    targets : ndarray with B rows, passed shard by shard to ``loss_fn``.
    loss_fn : ``(outputs, targets) -> (loss, doutputs)``, default
        :func:`normlab.nn.softmax_cross_entropy` (a mean over the shard's samples).
    devices : int, k.
    sync_batchnorm : bool, default False
        False: per-device BatchNorm (statistics of each device's B/k samples).
        True: synchronized BatchNorm (statistics of all B samples).
    running_stats : ``"average"`` (default) or ``"first_device"``
        With per-device BatchNorm: keep the devices' running statistics averaged, or
        device 0's (PyTorch DDP's default). Synchronized, both are the same.

    Returns
    -------
    ParallelStep
        ``loss`` (float), ``outputs`` (B, ...) and ``input_grad`` (B, ...), the
        gradient of ``loss`` with respect to ``x``.

    Notes
    -----
    ``model`` itself runs no forward here, so its ``backward`` has nothing to work
    from afterwards; its parameters are unchanged, its gradients replaced.
    """
    if not isinstance(model, Module):
        raise TypeError(
            f"data_parallel_step: model must be a normlab Module, got {type(model).__name__}."
        )
    devices = check_positive_int(devices, "devices", "data_parallel_step")
    if running_stats not in RUNNING_STATS_CHOICES:
        raise ValueError(
            f"data_parallel_step: running_stats must be one of {RUNNING_STATS_CHOICES}, "
            f"got {running_stats!r}."
        )
    x = as_float_array(x, "data_parallel_step")
    targets = np.asarray(targets)
    if x.ndim == 0 or targets.ndim == 0 or len(targets) != len(x):
        raise ValueError(
            f"data_parallel_step: x and targets need the same number of samples, got x of "
            f"shape {x.shape} and targets of shape {targets.shape}."
        )
    batch_size = len(x)
    if batch_size % devices:
        raise ValueError(
            f"data_parallel_step: a batch of {batch_size} samples does not split into "
            f"{devices} equal shards; pass a batch size that is a multiple of {devices}."
        )
    batchnorms = [module for module in model.modules() if isinstance(module, BatchNorm)]
    if sync_batchnorm:
        ghost = [repr(layer) for layer in batchnorms if layer.ghost_batch_size is not None]
        if ghost:
            raise ValueError(
                "data_parallel_step: synchronized BatchNorm takes the statistics of the whole "
                f"batch, which contradicts ghost batches: {ghost}. Use ghost_batch_size=None."
            )

    replicas = [copy.deepcopy(model) for _ in range(devices)]  # one copy per device
    group = Devices(devices)
    if sync_batchnorm:
        for rank, replica in enumerate(replicas):
            for layer in replica.modules():
                if isinstance(layer, BatchNorm):
                    layer.all_reduce = partial(group.all_reduce, rank)
    x_shards = np.split(x, devices)  # consecutive B/k samples per device
    target_shards = np.split(targets, devices)

    def one_device(rank: int):
        replica = replicas[rank]
        outputs = replica(x_shards[rank])
        loss, doutputs = loss_fn(outputs, target_shards[rank])
        input_grad = replica.backward(doutputs)
        return loss, outputs, input_grad

    losses, outputs, input_grads = zip(*group.run(one_device), strict=True)
    _average_gradients_into(model, replicas)
    # Synchronized, every replica holds the same running statistics: device 0's are all of them.
    _keep_running_stats(model, replicas, "first_device" if sync_batchnorm else running_stats)
    # Device j's backward gave ∂L_j/∂x_j, and L = mean_j L_j: so ∂L/∂x_j = (∂L_j/∂x_j) / k.
    input_grad = np.concatenate(input_grads) / x.dtype.type(devices)
    loss = float(sum(losses) / devices)
    return ParallelStep(loss, np.concatenate(outputs), input_grad)


def _matching_modules(model: Module, replicas: list[Module]):
    """(module of model, the same module in every replica), for every module of model."""
    return zip(model.modules(), *(replica.modules() for replica in replicas), strict=True)


def _average_gradients_into(model: Module, replicas: list[Module]) -> None:
    """DDP's all-reduce of the gradients: their mean over the devices, into ``model.grads``."""
    for module, *copies in _matching_modules(model, replicas):
        if isinstance(module, Container):  # its parameters belong to its children
            continue
        for name in module.params:
            if name not in copies[0].grads:
                continue
            total = copies[0].grads[name]
            for replica_module in copies[1:]:
                total = total + replica_module.grads[name]
            module.set_grad(name, total / total.dtype.type(len(copies)))


def _keep_running_stats(model: Module, replicas: list[Module], running_stats: str) -> None:
    """The running statistics the model keeps from its replicas (see the module's docstring)."""
    for module, *copies in _matching_modules(model, replicas):
        if not isinstance(module, BatchNorm) or not module.has_running_stats:
            continue
        first = copies[0]
        module.num_batches_tracked = first.num_batches_tracked
        if running_stats == "first_device":
            module.running_mean[...] = first.running_mean
            module.running_var[...] = first.running_var
            continue
        for name in ("running_mean", "running_var"):
            total = getattr(first, name)
            for replica_module in copies[1:]:
                total = total + getattr(replica_module, name)
            getattr(module, name)[...] = total / len(copies)
