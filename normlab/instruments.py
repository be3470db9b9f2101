"""Instruments that count the work of a computation, so that cost is a number, not a timing.

Timings change from machine to machine and run to run; counts do not. The experiments
and notebooks that compare what layers cost use these (``rms_vs_layernorm``'s panel (c)):

* :func:`count_reductions`: how often the core's sums run (:func:`normlab.functional.reduce_sum`
  and :func:`~normlab.functional.reduce_sum_product`, each one pass over one or two arrays).
* :func:`record_batch_statistics`: every training batch's BatchNorm statistics next to the
  running statistics they update, the numbers behind "how much do batch statistics
  fluctuate?" (``lm_norms``, after Shen et al. 2020, Fig. 1).

The layers accept ndarray subclasses as they are (:func:`normlab.module.as_float_array`),
so an array that counts the operations it takes part in can also be passed straight in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from normlab._fastsum import OPEN_COUNTERS
from normlab.layers import BatchNorm

__all__ = ["BatchStatistics", "count_reductions", "record_batch_statistics"]


@contextmanager
def count_reductions() -> Iterator[Counter]:
    """Count the calls of ``reduce_sum`` and ``reduce_sum_product`` inside the block.

    Yields a :class:`collections.Counter` keyed by function name; ``counted.total()`` is
    the number of reductions. Blocks may nest: every open block counts each call.

    >>> import numpy as np, normlab as nl
    >>> from normlab.instruments import count_reductions
    >>> x = np.ones((4, 8), dtype=np.float32)
    >>> with count_reductions() as counted:
    ...     _ = nl.LayerNorm(8)(x)
    >>> dict(counted)   # the mean, then the variance as a sum of squares
    {'reduce_sum': 1, 'reduce_sum_product': 1}
    """
    counter: Counter = Counter()
    OPEN_COUNTERS.append(counter)
    try:
        yield counter
    finally:
        OPEN_COUNTERS.remove(counter)


class BatchStatistics(NamedTuple):
    """One training batch of one BatchNorm layer, each array of shape (C,) (float64).

    ``batch_mean``, ``batch_var``: the statistics the running averages take a step towards
    (the variance unbiased, ``var · n/(n − 1)``); ``running_mean``, ``running_var``: the
    running averages just before that step; ``count``: values per statistic (the fewest,
    under a mask).
    """

    batch_mean: np.ndarray
    batch_var: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    count: int


@contextmanager
def record_batch_statistics(model) -> Iterator[list[list[BatchStatistics]]]:
    """Record every running-statistics update of the BatchNorm layers of ``model`` in the block.

    Yields one list per BatchNorm layer (in ``model.modules()`` order), to which each
    training forward appends a :class:`BatchStatistics`. Nothing the model computes
    changes; the layers are restored when the block ends.

    >>> import numpy as np
    >>> from normlab import nn
    >>> model = nn.MLP(4, 8, 2, norm="batch", rng=0)
    >>> with record_batch_statistics(model) as records:
    ...     _ = model(np.random.default_rng(0).normal(size=(16, 4)))
    >>> [len(layer_records) for layer_records in records], records[0][0].count
    ([1, 1], 16)
    """
    layers = [module for module in model.modules() if isinstance(module, BatchNorm)]
    per_position = [repr(layer) for layer in layers if layer.max_positions is not None]
    if per_position:
        raise ValueError(
            "record_batch_statistics compares one statistic per feature with its running "
            f"average; these layers keep one per position: {per_position}"
        )
    records: list[list[BatchStatistics]] = [[] for _ in layers]
    for layer, layer_records in zip(layers, records, strict=True):
        layer._update_running_stats = _recording(layer, layer_records)  # shadows the method
    try:
        yield records
    finally:
        for layer in layers:
            del layer._update_running_stats  # the class's method again


def _recording(layer: BatchNorm, layer_records: list):
    update = type(layer)._update_running_stats

    def update_and_record(mean, var, count) -> None:
        values = np.asarray(count)
        n = values.astype(np.float64)
        features = layer.num_features
        unbiased = var.astype(np.float64) * n / np.maximum(n - 1, 1)  # what the step moves to
        layer_records.append(
            BatchStatistics(
                batch_mean=mean.astype(np.float64).reshape(-1, features).mean(axis=0),
                batch_var=unbiased.reshape(-1, features).mean(axis=0),
                running_mean=layer.running_mean.astype(np.float64),
                running_var=layer.running_var.astype(np.float64),
                count=int(values.min()),
            )
        )
        update(layer, mean, var, count)

    return update_and_record
