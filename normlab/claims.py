"""Claims about normalization, judged by one rule: the verdicts of notebook 6.

A popular claim ("LayerNorm does better with small batches", "BatchNorm allows higher
learning rates") becomes a few *comparisons* of measured numbers, and each comparison is
:func:`normlab.stats.paired_comparison`: per-seed paired differences, a hierarchical
bootstrap interval over seeds (and test images, when the experiment kept them) and an
equivalence margin. Each comparison reads ``"better"``, ``"worse"``, ``"as good as"`` or
``"inconclusive"`` (see :mod:`normlab.stats`). The claim's verdict then follows from its
readings by one rule, :func:`judge`:

* **TRUE** when every reading supports the claim, **FALSE** when every reading
  contradicts it, **IT DEPENDS** when some support it and some contradict it;
* with inconclusive readings among them: **TRUE (FALSE) where measurable** when the
  others all support (contradict) it, **CANNOT TELL** when none can be told.

Claims about a *mechanism* ("LayerNorm takes no statistics across tokens") are judged on
exact numbers instead (a derivative that is exactly 0, a ValueError): no noise to
average out there.

:class:`Verdicts` collects the verdicts of a notebook with their evidence;
:func:`compare` (:func:`compare_each` for a table) and :class:`Reading` word one
comparison, :func:`tally` lists their verdicts; :func:`accuracy_table` prints
per-seed accuracies with their spread; :func:`time_alternating` times functions for the
claim "RMSNorm is faster" (wall-clock, machine-dependent: never saved with the results).

>>> import numpy as np
>>> a, b = np.array([0.97, 0.96, 0.98]), np.array([0.90, 0.91, 0.89])
>>> reading = compare("LN − BN at B = 2", a, b, margin=0.01)
>>> reading.verdict
'better'
>>> judge([reading], supports=("better",))
'TRUE at our scale'
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from normlab import stats

__all__ = [
    "MARGIN_POINTS",
    "Reading",
    "Verdicts",
    "accuracy_table",
    "compare",
    "compare_each",
    "judge",
    "reading_of",
    "tally",
    "time_alternating",
]

#: "As good as" for accuracies: the whole interval within ±1 point. One run's binomial
#: standard error on the 450 digits test images is about 0.8 points at 97 %.
MARGIN_POINTS = 1.0


@dataclass(frozen=True)
class Reading:
    """One comparison ``a − b`` in words: what, the mean difference, its interval, the verdict.

    ``scale`` and ``unit`` say how the numbers print (100 and "points" for accuracies).
    """

    what: str
    comparison: stats.PairedComparison
    scale: float = 100.0
    unit: str = "points"

    @property
    def verdict(self) -> str:
        return self.comparison.verdict

    def __str__(self) -> str:
        low, high = (self.scale * value for value in self.comparison.interval)
        return (
            f"{self.what}: {self.scale * self.comparison.mean_difference:+.2f} {self.unit} "
            f"[{low:+.2f}, {high:+.2f}] → {self.verdict} "
            f"(margin ±{self.scale * self.comparison.margin:.2g})"
        )


def compare(
    what: str, a, b, *, margin: float = MARGIN_POINTS / 100, scale: float = 100.0, unit="points"
) -> Reading:
    """:func:`normlab.stats.paired_comparison` of ``a`` with ``b``, as a :class:`Reading`.

    ``a`` and ``b``: (seeds,) or (seeds, test images) with row s from seed s; ``margin``
    in the units of ``a`` (fractions for accuracies).
    """
    return Reading(what, stats.paired_comparison(a, b, margin=margin), scale, unit)


def compare_each(what: str, labels: Sequence, a_rows, b_rows, **options) -> list[Reading]:
    """One :func:`compare` per label: ``what.format(label)`` for row i of ``a_rows``, ``b_rows``.

    For tables an experiment stores as lists over a swept value (batch sizes, lengths) of
    lists over seeds: ``compare_each("LN − BN at B = {}", sizes, accuracy["layer"],
    accuracy["batch"])``. ``options`` go to :func:`compare` (``margin``, ``scale``, ``unit``).
    """
    return [
        compare(what.format(label), a, b, **options)
        for label, a, b in zip(labels, a_rows, b_rows, strict=True)
    ]


def tally(readings: Sequence[Reading]) -> str:
    """The verdicts of ``readings`` in order, for an evidence line: ``"better, inconclusive"``."""
    return ", ".join(reading.verdict for reading in readings)


def reading_of(what: str, stored: Mapping, *, scale: float = 100.0, unit="points") -> Reading:
    """A :class:`Reading` of a comparison an experiment stored (``PairedComparison.to_dict``)."""
    comparison = stats.PairedComparison(
        mean_difference=stored["mean_difference"],
        interval=tuple(stored["interval"]),
        per_seed_differences=tuple(stored["per_seed_differences"]),
        margin=stored["margin"],
        confidence=stored["confidence"],
        verdict=stored["verdict"],
        resampled=stored["resampled"],
    )
    return Reading(what, comparison, scale, unit)


def judge(
    readings: Sequence[Reading | str],
    *,
    supports: Sequence[str],
    contradicts: Sequence[str] = (),
) -> str:
    """The verdict of a claim from its readings, by the rule of the module docstring.

    ``readings``: :class:`Reading` objects or their verdicts (strings of
    :data:`normlab.stats.VERDICTS`). ``supports``: the verdicts that support the claim
    (e.g. ``("better",)`` for "A beats B"); ``contradicts``: those that contradict it
    (default: every verdict but "inconclusive" that does not support it).
    """
    if not readings:
        raise ValueError("judge needs at least one reading")
    verdicts = [getattr(reading, "verdict", reading) for reading in readings]
    unknown = sorted(set(verdicts) - set(stats.VERDICTS))
    if unknown:
        raise ValueError(f"judge: unknown verdict(s) {unknown}; the verdicts are {stats.VERDICTS}")
    decided = [verdict for verdict in verdicts if verdict != "inconclusive"]
    contradicts = contradicts or [
        v for v in stats.VERDICTS if v not in supports and v != "inconclusive"
    ]
    support = sum(verdict in supports for verdict in decided)
    against = sum(verdict in contradicts for verdict in decided)
    undecided = len(readings) - support - against
    if support and against:
        return "IT DEPENDS"
    if not support and not against:
        return "CANNOT TELL with these seeds"
    side = "TRUE" if support else "FALSE"
    if undecided:
        return f"{side} where measurable ({undecided} of {len(readings)} inconclusive)"
    return f"{side} at our scale"


class Verdicts:
    """The verdicts of a notebook, in order, each with its evidence; printed as it is recorded."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, str]] = {}

    def record(self, claim: str, verdict: str, evidence: str) -> None:
        self.entries[claim] = (verdict, evidence)
        print(f"VERDICT: {verdict}\n  because: {evidence}")

    def summary(self) -> str:
        """Every claim with its verdict and evidence, one block each."""
        return "\n\n".join(
            f"{claim}\n    {verdict}\n    {evidence}"
            for claim, (verdict, evidence) in self.entries.items()
        )


def accuracy_table(accuracy: Mapping[str, Sequence], rows: Sequence, row_label: str) -> str:
    """Median accuracy (%) with [min–max] over seeds: one row per entry of ``rows``.

    ``accuracy[method]`` is a list over ``rows`` of lists over seeds (fractions), as the
    experiments store them.
    """
    methods = list(accuracy)
    lines = [f"{row_label:>8}" + "".join(f"{method:>20}" for method in methods)]
    for index, row in enumerate(rows):
        cells = []
        for method in methods:
            values = 100 * np.asarray(accuracy[method][index], dtype=float)
            cells.append(f"{np.median(values):6.1f} [{values.min():4.1f}–{values.max():5.1f}]")
        lines.append(f"{row!s:>8}" + "".join(f"{cell:>20}" for cell in cells))
    return "\n".join(lines)


def time_alternating(
    functions: Mapping[str, Callable[[], object]], *, repeats: int, calls: int
) -> dict[str, np.ndarray]:
    """Seconds per call of each function, one value per repeat, the functions alternating.

    Each repeat times ``calls`` calls of every function in turn (one untimed call of each
    first), so a slow spell of a shared machine falls on all of them and the repeats pair
    up: ``stats.paired_comparison(times["a"], times["b"], ...)`` compares them repeat by
    repeat. One BLAS thread, as in the experiments. Machine-dependent: print it, never
    save it with results that must be byte-identical.
    """
    if repeats < 1 or calls < 1:
        raise ValueError(f"repeats and calls must be ≥ 1, got {repeats} and {calls}")
    times = {name: np.empty(repeats) for name in functions}
    with threadpool_limits(limits=1, user_api="blas"):
        for function in functions.values():
            function()
        for repeat in range(repeats):
            for name, function in functions.items():
                start = time.perf_counter()
                for _ in range(calls):
                    function()
                times[name][repeat] = (time.perf_counter() - start) / calls
    return times
