"""causal_leak in quick mode: BatchNorm (train) leaks future tokens into earlier outputs."""

from __future__ import annotations

import numpy as np
import pytest

from normlab.experiments import causal_leak


@pytest.fixture(scope="module")
def results(quick_runs):
    return quick_runs.results(causal_leak.NAME)


def heatmap(results, method: str) -> np.ndarray:
    return np.asarray(results["heatmap"][method]["block_norms"])  # (T, T), rows t, columns s


def test_batchnorm_jacobian_has_nonzero_blocks_above_the_diagonal(results):
    norms = heatmap(results, "batch")
    future = norms[np.triu_indices(norms.shape[0], k=1)]
    assert np.all(future > 0)


@pytest.mark.parametrize("method", ["layer", "rms", "batch_eval"])
def test_layer_rms_and_eval_batchnorm_have_exactly_zero_off_diagonal_blocks(results, method):
    norms = heatmap(results, method)
    off_diagonal = norms[~np.eye(norms.shape[0], dtype=bool)]
    assert np.all(off_diagonal == 0.0)
    assert np.all(np.diag(norms) > 0)
    for panel in ("against_seq_len", "against_batch_size"):
        assert np.all(np.asarray(results[panel][method]["future_max"]) == 0.0)
        assert np.all(np.asarray(results[panel][method]["past_total"]) == 0.0)


def test_batchnorm_blocks_match_the_closed_form():
    """‖∂y_t/∂x_s‖_F for s ≠ t equals (1/M)·‖rstd·(1 + x̂_t x̂_s)‖ per feature (γ = 1)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 4))
    norms = causal_leak.block_norms(causal_leak.make_layer("batch", 4, x), x)
    mean = x.mean(axis=(0, 1))
    rstd = 1 / np.sqrt(x.var(axis=(0, 1)) + 1e-5)
    xhat = (x[0] - mean) * rstd  # (T, D), the first sequence
    tokens = x.shape[0] * x.shape[1]
    closed = np.sqrt(((rstd * (1 + xhat[:, None, :] * xhat[None, :, :])) ** 2).sum(-1)) / tokens
    off_diagonal = ~np.eye(x.shape[1], dtype=bool)
    assert np.allclose(norms[off_diagonal], closed[off_diagonal], rtol=1e-10)


def test_total_leak_grows_with_length_and_per_pair_leak_shrinks(results):
    table = results["against_seq_len"]["batch"]
    total = np.median(table["future_total"], axis=1)
    per_pair = np.median(table["future_per_pair"], axis=1)
    assert np.all(np.diff(total) > 0)
    assert np.all(np.diff(per_pair) < 0)


def test_leak_shrinks_with_batch_size(results):
    total = np.median(results["against_batch_size"]["batch"]["future_total"], axis=1)
    assert np.all(np.diff(total) < 0)
    ratios = results["headline"]["batchnorm_future_total_over_theory_vs_batch_size"]
    assert all(0.7 < ratio < 1.2 for ratio in ratios)  # √(2D)(T−1)/(2N) within 30 %


@pytest.mark.parametrize("method", causal_leak.SEQUENCE_METHODS)
def test_group_and_instance_norm_see_the_future_whatever_the_batch_size(results, method):
    norms = heatmap(results, method)
    assert np.all(norms[np.triu_indices(norms.shape[0], k=1)] > 0)
    by_batch = np.asarray(results["against_batch_size"][method]["future_total"])  # (N, seeds)
    assert np.allclose(by_batch, by_batch[0])  # per sample: the other sequences do not enter
    by_length = np.median(results["against_seq_len"][method]["future_total"], axis=1)
    assert np.all(np.diff(by_length) > 0)
    ratios = results["headline"][f"{method}_future_total_over_theory_vs_seq_len"]
    assert all(0.7 < ratio < 1.4 for ratio in ratios[1:])  # the first T is too short


def test_instance_norm_leaks_like_batchnorm_with_one_sequence(results):
    """InstanceNorm on (N, T, D) is BatchNorm on each sequence alone: equal at N = 1."""
    batch_sizes = results["config"]["batch_sizes"]
    if 1 in batch_sizes:
        index = batch_sizes.index(1)
        by_batch = results["against_batch_size"]
        np.testing.assert_allclose(
            by_batch["instance"]["future_total"][index],
            by_batch["batch"]["future_total"][index],
            rtol=1e-9,
        )
