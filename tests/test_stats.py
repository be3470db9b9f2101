"""normlab.stats: paired comparisons whose intervals cover the truth and whose verdicts follow."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import stats


def simulated_correctness(rng, accuracy, num_seeds, num_examples, seed_spread=0.0):
    """Per-seed accuracies around ``accuracy``; per-example 1/0 drawn from them."""
    per_seed = np.clip(accuracy + seed_spread * rng.standard_normal(num_seeds), 0, 1)
    return rng.random((num_seeds, num_examples)) < per_seed[:, None]


def test_binomial_standard_error_matches_the_formula():
    assert stats.binomial_standard_error(0.97, 450) == pytest.approx(np.sqrt(0.97 * 0.03 / 450))
    with pytest.raises(ValueError, match="num_examples"):
        stats.binomial_standard_error(0.5, 0)


def test_a_clear_difference_is_better_and_reversed_is_worse():
    rng = np.random.default_rng(0)
    a = simulated_correctness(rng, 0.97, 5, 450)
    b = simulated_correctness(rng, 0.90, 5, 450)
    assert stats.paired_comparison(a, b, margin=0.01).verdict == "better"
    assert stats.paired_comparison(b, a, margin=0.01).verdict == "worse"


def test_per_example_results_widen_the_interval_by_the_test_set_noise():
    """Five seeds that agree closely: the seeds alone claim a precision the test set lacks."""
    rng = np.random.default_rng(1)
    a = simulated_correctness(rng, 0.95, 5, 450)
    b = simulated_correctness(rng, 0.95, 5, 450)
    by_example = stats.paired_comparison(a, b, margin=0.01)
    by_seed = stats.paired_comparison(a.mean(axis=1), b.mean(axis=1), margin=0.01)
    assert by_example.resampled == "seeds and test examples" and by_seed.resampled == "seeds"
    assert by_example.mean_difference == pytest.approx(by_seed.mean_difference)
    width = by_example.interval[1] - by_example.interval[0]
    expected = 2 * 1.96 * np.sqrt(2 * 0.95 * 0.05 / (5 * 450))  # two independent binomials
    assert 0.7 * expected < width < 1.3 * expected


def test_intervals_cover_the_true_difference_about_as_often_as_they_claim():
    rng = np.random.default_rng(2)
    covered = 0
    trials = 60
    for trial in range(trials):
        a = simulated_correctness(rng, 0.93, 4, 300, seed_spread=0.01)
        b = simulated_correctness(rng, 0.91, 4, 300, seed_spread=0.01)
        low, high = stats.paired_comparison(a, b, margin=0.0, resamples=500, seed=trial).interval
        covered += low <= 0.02 <= high
    assert covered / trials > 0.8  # nominal 95 %; the bootstrap is a bit narrow at 4 seeds


def test_equivalence_needs_an_interval_inside_the_margin():
    rng = np.random.default_rng(3)
    a = simulated_correctness(rng, 0.95, 10, 2000)
    b = simulated_correctness(rng, 0.95, 10, 2000)
    assert stats.paired_comparison(a, b, margin=0.01).verdict == "as good as"
    one_seed_few_examples = stats.paired_comparison(a[:1, :50], b[:1, :50], margin=0.01)
    assert one_seed_few_examples.verdict == "inconclusive"


def test_the_same_inputs_give_the_same_interval():
    rng = np.random.default_rng(4)
    a, b = rng.random((3, 40)), rng.random((3, 40))
    first = stats.paired_comparison(a, b, margin=0.05)
    assert stats.paired_comparison(a, b, margin=0.05) == first
    assert stats.bootstrap_interval([1.0, 2.0, 3.0]) == stats.bootstrap_interval([1.0, 2.0, 3.0])
    assert stats.bootstrap_interval([2.5]) == (2.5, 2.5)


def test_verdicts_follow_the_interval():
    assert stats.verdict((0.001, 0.01), margin=0.02) == "better"
    assert stats.verdict((-0.03, -0.001), margin=0.02) == "worse"
    assert stats.verdict((-0.01, 0.01), margin=0.02) == "as good as"
    assert stats.verdict((-0.01, 0.03), margin=0.02) == "inconclusive"
    assert set(stats.VERDICTS) == {"better", "worse", "as good as", "inconclusive"}


@pytest.mark.parametrize(
    ("a", "b", "words"),
    [
        (np.zeros(3), np.zeros(4), "same shape"),
        (np.zeros((0,)), np.zeros((0,)), "at least one"),
        (np.array([1.0, np.nan]), np.zeros(2), "finite"),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), r"\(seeds,\)"),
    ],
)
def test_bad_inputs_are_named(a, b, words):
    with pytest.raises(ValueError, match=words):
        stats.paired_comparison(a, b, margin=0.01)
    with pytest.raises(ValueError, match="margin"):
        stats.paired_comparison(np.zeros(2), np.zeros(2), margin=-1)


def test_a_verdict_reads_as_words_and_an_unknown_one_is_refused():
    assert stats.verdict_phrase("worse", "BatchNorm") == "worse than BatchNorm"
    assert stats.verdict_phrase("as good as", "BatchNorm") == "as good as BatchNorm"
    with pytest.raises(ValueError, match="verdict must be one of"):
        stats.verdict_phrase("better!", "BatchNorm")
