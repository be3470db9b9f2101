"""normlab.claims: one rule from readings to a verdict, readings in words, the timing helper."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from normlab import claims, stats


def test_docstring_examples_run():
    results = doctest.testmod(claims)
    assert results.attempted > 0 and results.failed == 0


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (["better", "better"], "TRUE at our scale"),
        (["worse", "as good as"], "FALSE at our scale"),
        (["better", "worse"], "IT DEPENDS"),
        (["better", "inconclusive"], "TRUE where measurable (1 of 2 inconclusive)"),
        (
            ["as good as", "inconclusive", "inconclusive"],
            "FALSE where measurable (2 of 3 inconclusive)",
        ),
        (["inconclusive"], "CANNOT TELL with these seeds"),
    ],
)
def test_judge_applies_one_rule_to_the_readings(verdicts, expected):
    assert claims.judge(verdicts, supports=("better",)) == expected


def test_judge_takes_what_supports_and_what_contradicts_the_claim():
    # "as good as": equivalence supports it, a difference either way contradicts it
    assert claims.judge(["as good as"], supports=("as good as",)) == "TRUE at our scale"
    assert claims.judge(["better"], supports=("as good as",)) == "FALSE at our scale"
    # "not worse": only "worse" contradicts
    verdict = claims.judge(
        ["better", "as good as"], supports=("better", "as good as"), contradicts=("worse",)
    )
    assert verdict == "TRUE at our scale"
    with pytest.raises(ValueError, match="unknown verdict"):
        claims.judge(["ahead"], supports=("better",))
    with pytest.raises(ValueError, match="at least one"):
        claims.judge([], supports=("better",))


def test_a_reading_prints_the_paired_comparison_in_the_units_asked_for():
    rng = np.random.default_rng(0)
    a = rng.random((3, 450)) < 0.97
    b = rng.random((3, 450)) < 0.95
    reading = claims.compare("A − B", a, b)
    comparison = stats.paired_comparison(a, b, margin=0.01)
    assert reading.comparison == comparison
    low, high = (100 * value for value in comparison.interval)
    assert str(reading) == (
        f"A − B: {100 * comparison.mean_difference:+.2f} points [{low:+.2f}, {high:+.2f}] → "
        f"{comparison.verdict} (margin ±1)"  # two significant digits
    )
    again = claims.reading_of("A − B", comparison.to_dict())
    assert again.comparison == comparison


def test_accuracy_table_shows_median_and_range_over_seeds():
    table = claims.accuracy_table({"layer": [[0.9, 0.95, 0.97]]}, [32], "B")
    assert table.splitlines()[1].split() == ["32", "95.0", "[90.0–", "97.0]"]


def test_time_alternating_gives_one_time_per_repeat_for_each_function():
    calls = []
    times = claims.time_alternating(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, calls=2
    )
    assert {name: values.shape for name, values in times.items()} == {"a": (3,), "b": (3,)}
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3  # one untimed call each, alternating
    assert all(np.all(values >= 0) for values in times.values())


def test_compare_each_makes_one_reading_per_row_and_tally_lists_their_verdicts():
    better, equal = [0.9, 0.92, 0.91], [0.5, 0.52, 0.51]
    readings = claims.compare_each("A − B at B = {}", (2, 32), [better, better], [equal, better])
    assert [reading.what for reading in readings] == ["A − B at B = 2", "A − B at B = 32"]
    assert claims.tally(readings) == "better, as good as"
