"""Instruments that count the work of a computation, so that cost is a number, not a timing.

Timings change from machine to machine and run to run; counts do not. The experiments
and notebooks that compare what layers cost use these (``rms_vs_layernorm``'s panel (c)):

* :func:`count_reductions`: how often the core's sums run (:func:`normlab.functional.reduce_sum`
  and :func:`~normlab.functional.reduce_sum_product`, each one pass over one or two arrays).

The layers accept ndarray subclasses as they are (:func:`normlab.module.as_float_array`),
so an array that counts the operations it takes part in can also be passed straight in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from normlab._fastsum import OPEN_COUNTERS

__all__ = ["count_reductions"]


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
