"""Embedding and MultiheadAttention: gradients, masks of any pattern, causality, torch parity.

Parity with torch (``torch.nn.Embedding`` and ``torch.nn.MultiheadAttention(batch_first=True)``)
moves torch's weights in through ``load_state_dict`` and compares the output, the input
gradient and every parameter gradient (through ``state_dict(grads=True)``), in float32 and
float64, with the tolerances of ``test_parity_torch.py``. torch's outputs at padded queries are
not defined as 0, so only real positions are compared there, and the upstream gradient given to
torch is 0 at padded outputs (normlab ignores what arrives there by definition).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_parity_torch import assert_close_to_torch, torch_dtype

import normlab as nl
from normlab.gradcheck import numerical_gradient, relative_error
from normlab.nn import Embedding, MultiheadAttention
from normlab.nn.attention import visible_keys

GRADCHECK_TOLERANCE = 1e-7
DTYPES = (np.float32, np.float64)


def mask_with_holes(batch: int, length: int) -> np.ndarray:
    """Padding of every pattern: trailing, a hole in the middle, alternating, none."""
    patterns = [
        np.arange(length) < length - 2,  # trailing padding
        np.arange(length) != length // 2,  # one hole
        np.arange(length) % 2 == 0,  # every other token
        np.ones(length, dtype=bool),  # no padding
    ]
    return np.stack([patterns[row % len(patterns)] for row in range(batch)])


def randomize_params(module, rng, scale: float = 0.5) -> None:
    """Random values for every parameter (zero biases would hide bugs in their gradients)."""
    for value in module.params.values():
        value[...] = rng.normal(0.0, scale, size=value.shape)


# ---------------------------------------------------------------------------
# Embedding
# ---------------------------------------------------------------------------


def test_embedding_looks_up_rows_and_adds_up_gradients_of_repeated_ids(rng):
    table = Embedding(5, 3, rng=0, dtype=np.float64)
    ids = np.array([[1, 4, 1], [0, 1, 2]])
    y = table(ids)
    np.testing.assert_array_equal(y, table.params["weight"][ids])
    dy = rng.normal(size=y.shape)
    assert table.backward(dy) is None  # ids have no gradient
    expected = np.zeros((5, 3))
    for position, row in np.ndenumerate(ids):
        expected[row] += dy[position]
    np.testing.assert_allclose(table.grads["weight"], expected, rtol=1e-15)
    assert not table.grads["weight"][3].any()  # id 3 was never looked up


def test_embedding_gradient_matches_finite_differences_with_and_without_mask(rng):
    table = Embedding(4, 3, rng=1, dtype=np.float64)
    ids = rng.integers(0, 4, size=(3, 5))
    for mask in (None, mask_with_holes(3, 5)):
        upstream = rng.normal(size=(3, 5, 3))

        def loss(mask=mask, upstream=upstream):
            return float(np.sum(table(ids, mask=mask) * upstream))

        loss()
        table.backward(upstream)
        analytic = table.grads["weight"].copy()
        numeric = numerical_gradient(loss, table.params["weight"])
        assert relative_error(analytic, numeric) < GRADCHECK_TOLERANCE


def test_embedding_padding_is_zero_ignores_its_ids_and_sends_nothing_back(rng):
    table = Embedding(6, 4, rng=0)
    mask = mask_with_holes(4, 5)
    ids = rng.integers(0, 6, size=(4, 5))
    ids_with_junk = np.where(mask, ids, -7)  # padding may hold any integer
    y = table(ids_with_junk, mask=mask)
    assert not y[~mask].any()
    np.testing.assert_array_equal(y[mask], table.params["weight"][ids[mask]])
    dy = np.ones(y.shape, dtype=np.float32)
    table.backward(dy)
    counts = np.bincount(ids[mask], minlength=6)  # only real tokens count
    np.testing.assert_array_equal(table.grads["weight"][:, 0], counts)


def test_embedding_init_is_standard_normal():
    weight = Embedding(400, 50, rng=0).params["weight"]
    assert weight.dtype == np.float32
    assert abs(weight.mean()) < 0.01 and abs(weight.std() - 1) < 0.01


@pytest.mark.parametrize(
    ("ids", "error", "words"),
    [
        (np.array([[0.0, 1.0]]), TypeError, "integer token ids, got dtype float64"),
        (np.array([[0, 5]]), ValueError, r"\[0, 5\).*got \[5\]"),
        (np.array([[-1, 2]]), ValueError, r"got \[-1\]"),
    ],
)
def test_embedding_rejects_bad_ids_naming_range_and_values(ids, error, words):
    table = Embedding(5, 2, rng=0)
    with pytest.raises(error, match=words):
        table(ids)


def test_embedding_rejects_a_mask_of_the_wrong_shape():
    table = Embedding(5, 2, rng=0)
    with pytest.raises(ValueError, match=r"shape of the token ids \(2, 3\), got \(2, 4\)"):
        table(np.zeros((2, 3), dtype=np.int64), mask=np.ones((2, 4), dtype=bool))


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_matches_torch(dtype, torch, rng):
    ours = Embedding(7, 4, rng=0, dtype=dtype)
    theirs = torch.nn.Embedding(7, 4, dtype=torch_dtype(torch, dtype))
    ours.load_state_dict(theirs.state_dict())
    ids = rng.integers(0, 7, size=(3, 6))
    dy = rng.normal(size=(3, 6, 4)).astype(dtype)
    y = ours(ids)
    ours.backward(dy)
    y_torch = theirs(torch.tensor(ids))
    y_torch.backward(torch.tensor(dy))
    assert_close_to_torch(y, y_torch, "output")
    assert_close_to_torch(ours.state_dict(grads=True)["weight"], theirs.weight.grad, "dweight")


# ---------------------------------------------------------------------------
# MultiheadAttention: the definition
# ---------------------------------------------------------------------------


def attention_by_loops(attention, x, mask):
    """The formula, one sequence and head at a time, with masked keys left out (float64)."""
    params = {name: value.astype(np.float64) for name, value in attention.params.items()}
    width, heads = attention.embed_dim, attention.num_heads
    head_dim = width // heads
    batch, length, _ = x.shape
    mask = np.ones((batch, length), dtype=bool) if mask is None else mask
    y = np.zeros((batch, length, width))
    for n in range(batch):
        qkv = x[n] @ params["in_proj_weight"] + params.get("in_proj_bias", 0.0)  # (T, 3D)
        q, k, v = np.split(qkv, 3, axis=1)
        context = np.zeros((length, width))
        for t in range(length):
            if not mask[n, t]:
                continue
            keys = [s for s in range(length) if mask[n, s] and (s <= t or not attention.causal)]
            for h in range(heads):
                part = slice(h * head_dim, (h + 1) * head_dim)
                scores = np.array([q[t, part] @ k[s, part] for s in keys]) / np.sqrt(head_dim)
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                context[t, part] = weights @ v[keys, part]
        out = context @ params["out_proj.weight"] + params.get("out_proj.bias", 0.0)
        y[n] = out * mask[n, :, None]
    return y


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_mask", [False, True])
def test_attention_matches_the_formula_computed_with_loops(causal, use_mask, rng):
    attention = MultiheadAttention(6, 3, causal=causal, rng=0, dtype=np.float64)
    randomize_params(attention, rng)
    x = rng.normal(size=(4, 5, 6))
    mask = mask_with_holes(4, 5) if use_mask else None
    np.testing.assert_allclose(
        attention(x, mask=mask), attention_by_loops(attention, x, mask), rtol=1e-12, atol=1e-13
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_attention_gradients_match_finite_differences(causal, use_mask, bias, rng):
    attention = MultiheadAttention(4, 2, bias, causal=causal, rng=0, dtype=np.float64)
    randomize_params(attention, rng)
    x = rng.normal(size=(4, 4, 4))
    mask = mask_with_holes(4, 4) if use_mask else None
    errors = nl.gradcheck(attention, x, mask)
    assert set(errors) == {"input", *attention.params}
    assert max(errors.values()) < GRADCHECK_TOLERANCE, errors


def test_attention_weights_are_distributions_over_visible_keys_only(rng):
    attention = MultiheadAttention(8, 2, causal=True, rng=0)
    mask = mask_with_holes(4, 6)
    attention(rng.normal(size=(4, 6, 8)).astype(np.float32), mask=mask)
    weights = attention.attention_weights  # (N, H, T, T)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-6)
    hidden = ~visible_keys(mask, 6, causal=True)[:, None]  # (N, 1, T, T)
    real_queries = mask[:, None, :, None]
    assert not weights[np.broadcast_to(hidden & real_queries, weights.shape)].any()
    assert hidden[0, 0, 0, 1] and hidden[1, 0, 4, 3]  # the future; the hole at t = 3


def test_causal_attention_output_does_not_depend_on_later_tokens(rng):
    attention = MultiheadAttention(8, 2, causal=True, rng=0, dtype=np.float64)
    x = rng.normal(size=(2, 7, 8))
    y = attention(x)
    changed = x.copy()
    changed[:, 4:] = rng.normal(size=(2, 3, 8))  # the future of position 3
    np.testing.assert_array_equal(attention(changed)[:, :4], y[:, :4])
    assert not np.allclose(attention(changed)[:, 4:], y[:, 4:])


def test_padding_content_never_reaches_real_outputs_and_padding_stays_exactly_zero(rng):
    attention = MultiheadAttention(8, 4, rng=0)
    randomize_params(attention, rng)
    mask = mask_with_holes(4, 6)
    x = rng.normal(size=(4, 6, 8)).astype(np.float32)
    y = attention(x, mask=mask)
    junk = x.copy()
    junk[~mask] = np.nan  # padding that would poison any product it entered
    y_junk = attention(junk, mask=mask)
    np.testing.assert_array_equal(y_junk, y)
    assert (y[~mask] == 0).all()
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx = attention.backward(dy)
    assert np.isfinite(dx).all() and (dx[~mask] == 0).all()
    grads = {name: grad.copy() for name, grad in attention.grads.items()}
    dy_padded_changed = dy.copy()
    dy_padded_changed[~mask] = 1e6  # a gradient arriving at a padded output is ignored
    attention(junk, mask=mask)
    np.testing.assert_array_equal(attention.backward(dy_padded_changed), dx)
    for name, grad in attention.grads.items():
        np.testing.assert_array_equal(grad, grads[name])


def test_leading_padding_with_causal_attention_gives_no_nan(rng):
    """A padded query at position 0 has no visible real key: its row must not be 0/0."""
    attention = MultiheadAttention(4, 2, causal=True, rng=0)
    mask = np.array([[False, False, True, True], [True, True, True, True]])
    y = attention(rng.normal(size=(2, 4, 4)).astype(np.float32), mask=mask)
    dx = attention.backward(np.ones_like(y))
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    assert all(np.isfinite(grad).all() for grad in attention.grads.values())
    assert (y[~mask] == 0).all() and (dx[~mask] == 0).all()


def test_attention_init_follows_torch(rng):
    attention = MultiheadAttention(64, 4, rng=0)
    in_weight, out_weight = attention.params["in_proj_weight"], attention.params["out_proj.weight"]
    assert in_weight.shape == (64, 192) and in_weight.dtype == np.float32
    xavier_bound = np.sqrt(6 / (64 + 192))
    assert xavier_bound * 0.98 < np.abs(in_weight).max() <= xavier_bound
    assert 0.98 / 8 < np.abs(out_weight).max() <= 1 / 8  # U(±1/sqrt(64))
    assert not attention.params["in_proj_bias"].any()
    assert not attention.params["out_proj.bias"].any()


def test_attention_state_dict_names_and_layouts_round_trip(rng):
    attention = MultiheadAttention(6, 2, rng=0)
    state = attention.state_dict()
    assert {name: value.shape for name, value in state.items()} == {
        "in_proj_weight": (18, 6),
        "in_proj_bias": (18,),
        "out_proj.weight": (6, 6),
        "out_proj.bias": (6,),
    }
    other = MultiheadAttention(6, 2, rng=1)
    other.load_state_dict(state)
    x = rng.normal(size=(2, 3, 6)).astype(np.float32)
    np.testing.assert_array_equal(other(x), attention(x))
    assert sorted(MultiheadAttention(6, 2, bias=False, rng=0).state_dict()) == [
        "in_proj_weight",
        "out_proj.weight",
    ]


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: MultiheadAttention(10, 4, rng=0), r"embed_dim=10 must be divisible by num_heads"),
        (lambda: MultiheadAttention(0, 1, rng=0), "embed_dim must be a positive integer"),
        (lambda: MultiheadAttention(8, 2, rng=0, dtype=np.int32), "floating dtype"),
    ],
)
def test_attention_rejects_bad_construction(build, words):
    with pytest.raises((ValueError, TypeError), match=words):
        build()


def test_attention_rejects_bad_input_naming_expected_and_given():
    attention = MultiheadAttention(8, 2, rng=0)
    x = np.zeros((2, 3, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"\(N, T, embed_dim=8\), got shape \(2, 3, 6\)"):
        attention(np.zeros((2, 3, 6), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape x.shape\[:-1\] = \(2, 3\), got \(2, 4\)"):
        attention(x, mask=np.ones((2, 4), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        attention(x, mask=np.ones((2, 3)))
    with pytest.raises(TypeError, match="floating-point"):
        attention(np.zeros((2, 3, 8), dtype=np.int64))
    with pytest.raises(RuntimeError, match="before any forward"):
        MultiheadAttention(8, 2, rng=0).backward(x)
    attention(x)
    with pytest.raises(ValueError, match=r"shape of the last output \(2, 3, 8\), got \(2, 3\)"):
        attention.backward(np.zeros((2, 3), dtype=np.float32))


# ---------------------------------------------------------------------------
# MultiheadAttention: parity with torch
# ---------------------------------------------------------------------------


def torch_attention_call(torch, module, x, mask, causal):
    """torch's self-attention as normlab computes it: padded keys and the future hidden."""
    length = x.shape[1]
    keywords = {"need_weights": False}
    if causal:
        keywords["attn_mask"] = torch.ones(length, length, dtype=torch.bool).triu(1)
    if mask is not None:
        keywords["key_padding_mask"] = torch.tensor(~mask)
    return module(x, x, x, **keywords)[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_attention_matches_torch(dtype, causal, padded, torch, rng):
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch_dtype(torch, dtype))
    with torch.no_grad():
        for parameter in theirs.parameters():  # random biases too
            parameter.copy_(torch.tensor(rng.normal(0.0, 0.5, size=tuple(parameter.shape))))
    ours = MultiheadAttention(8, 2, causal=causal, rng=0, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    x = rng.normal(size=(4, 5, 8)).astype(dtype)
    mask = mask_with_holes(4, 5) if padded else None
    real = np.ones((4, 5), dtype=bool) if mask is None else mask
    dy = rng.normal(size=x.shape).astype(dtype) * real[..., None]

    y = ours(x, mask=mask)
    dx = ours.backward(dy)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = torch_attention_call(torch, theirs, x_torch, mask, causal)
    y_torch.backward(torch.tensor(dy))

    assert_close_to_torch(y[real], y_torch.detach()[torch.tensor(real)], "output")
    assert_close_to_torch(dx, x_torch.grad, "dx")
    gradients = ours.state_dict(grads=True)
    assert set(gradients) == {name for name, _ in theirs.named_parameters()}
    for name, parameter in theirs.named_parameters():
        assert_close_to_torch(gradients[name], parameter.grad, f"d{name}")
