"""``mask_norm=False``: the norms of a transformer count the padding as data.

The padded positions still come out as exactly 0 and take no gradient; only the norms'
statistics change: BatchNorm's include the zeros at padding, LayerNorm's and RMSNorm's are
per token and do not change at all.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_attention import mask_with_holes, randomize_params
from test_transformer import (
    GRADCHECK_TOLERANCE,
    parameter_gradcheck,
    small_layer,
    tiny_lm,
)

import normlab as nl
from normlab import nn


@pytest.mark.parametrize("norm_first", [True, False])
def test_unmasked_batchnorm_layer_matches_finite_differences(norm_first, rng):
    layer = small_layer("batch", norm_first, causal=True, mask_norm=False)
    randomize_params(layer, rng, scale=0.7)
    errors = nl.gradcheck(layer, rng.normal(size=(4, 4, 4)), mask_with_holes(4, 4))
    if not norm_first:  # biases just before a BatchNorm cancel: their gradient is noise
        errors = {name: error for name, error in errors.items() if not name.endswith(".bias")}
    assert max(errors.values()) < GRADCHECK_TOLERANCE, errors


@pytest.mark.parametrize("norm_first", [True, False])
def test_padding_stays_zero_and_takes_no_gradient_without_the_mask_in_the_norms(norm_first, rng):
    layer = small_layer("batch", norm_first, causal=True, dtype=np.float32, mask_norm=False)
    mask = mask_with_holes(4, 5)
    x = rng.normal(size=(4, 5, 4)).astype(np.float32)
    y = layer(x, mask=mask)
    dx = layer.backward(rng.normal(size=y.shape).astype(np.float32))
    assert (y[~mask] == 0).all() and (dx[~mask] == 0).all()


def test_only_batchnorm_statistics_see_the_padding(rng):
    mask = mask_with_holes(4, 5)
    x = rng.normal(size=(4, 5, 4))
    for norm in ("layer", "rms"):
        masked, unmasked = small_layer(norm), small_layer(norm, mask_norm=False)
        np.testing.assert_allclose(unmasked(x, mask=mask), masked(x, mask=mask), atol=1e-12)
    masked, unmasked = small_layer("batch"), small_layer("batch", mask_norm=False)
    differ = np.abs(unmasked(x, mask=mask) - masked(x, mask=mask))[mask]
    assert differ.max() > 1e-3
    # Pre-LN: the first norm sees the block input, zeros at padding: its statistics are those
    # of BatchNorm over every position of the zero-padded input.
    fresh = small_layer("batch", mask_norm=False)
    fresh(x, mask=mask)
    reference = nl.BatchNorm(4, dtype=np.float64)
    reference(np.where(mask[..., None], x, 0.0))
    np.testing.assert_allclose(fresh.norm1.running_mean, reference.running_mean, rtol=1e-12)
    np.testing.assert_allclose(fresh.norm1.running_var, reference.running_var, rtol=1e-12)


def test_language_model_without_the_mask_in_its_norms(rng):
    model = tiny_lm(norm="batch", mask_norm=False)
    assert model.config.mask_norm is False
    rebuilt = nn.TransformerLM.from_config(model.config, rng=0, dtype=np.float64)
    assert rebuilt.config == model.config
    randomize_params(model, rng, scale=0.7)
    ids = rng.integers(0, 5, size=(4, 5))
    mask = mask_with_holes(4, 5)
    # A bias added at the real tokens only is not cancelled by a mean that also counts the
    # padding: unlike with the mask, every parameter has a gradient here.
    errors = parameter_gradcheck(model, ids, mask, rng)
    assert max(errors.values()) < GRADCHECK_TOLERANCE, errors
    logits = model(ids, mask=mask)
    assert (logits[~mask] == 0).all()
    masked = tiny_lm(norm="batch")
    masked.load_state_dict(model.state_dict())
    assert np.abs(masked(ids, mask=mask) - logits)[mask].max() > 1e-6
