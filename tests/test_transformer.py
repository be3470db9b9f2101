"""GELU, TransformerEncoderLayer and TransformerLM: gradients, padding, causality, torch parity.

The layer is compared with ``torch.nn.TransformerEncoderLayer(batch_first=True, dropout=0.0)``
(Pre-LN and Post-LN, padded with holes, causal), and with other norms by putting torch's
RMSNorm, or a BatchNorm1d over the real tokens, in the place of its two LayerNorms. The language
model is compared with the same model assembled from torch modules. Both run in training mode
with gradients, so torch never takes its inference fast path. As in ``test_attention.py``, only
real positions are compared where torch leaves padded outputs undefined.
"""

from __future__ import annotations

import copy
import doctest
import re
from pathlib import Path

import numpy as np
import pytest
from test_attention import mask_with_holes, randomize_params
from test_parity_torch import RELATIVE_TOLERANCE, assert_close_to_torch, torch_dtype

import normlab as nl
from normlab import NORM_KINDS, data, nn
from normlab.gradcheck import numerical_gradient, relative_error
from normlab.nn import (
    GELU,
    Linear,
    TransformerEncoderLayer,
    TransformerLM,
    TransformerLMConfig,
    activations,
    attention,
    embedding,
    models,
    optim,
    transformer,
)
from normlab.nn.activations import normal_cdf
from normlab.nn.models import sinusoidal_positions

GRADCHECK_TOLERANCE = 1e-7
DTYPES = (np.float32, np.float64)
README = Path(__file__).resolve().parents[1] / "README.md"


def small_layer(norm="layer", norm_first=True, causal=False, dtype=np.float64, **options):
    return TransformerEncoderLayer(
        4, 2, 6, norm=norm, norm_first=norm_first, causal=causal, rng=0, dtype=dtype, **options
    )


# ---------------------------------------------------------------------------
# GELU and the normal CDF
# ---------------------------------------------------------------------------


def test_normal_cdf_in_float32_is_within_rounding_of_float64_also_in_the_tails():
    x = np.linspace(-13.0, 13.0, 200001)
    exact = normal_cdf(x)  # float64: scipy's ndtr
    fast = normal_cdf(x.astype(np.float32))
    assert fast.dtype == np.float32
    assert np.max(np.abs(fast - exact)) < 4 * np.finfo(np.float32).eps
    tail = exact > 1e-30  # relative accuracy down to where float32 runs out
    assert np.max(np.abs(fast[tail] / exact[tail] - 1)) < 1e-4
    assert normal_cdf(np.float64(0.0)) == 0.5


def test_gelu_gradient_matches_finite_differences(rng):
    errors = nl.gradcheck(GELU(), rng.normal(0.0, 3.0, size=(5, 7)))
    assert errors["input"] < GRADCHECK_TOLERANCE


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_matches_torch(dtype, torch, rng):
    x = (rng.normal(0.0, 3.0, size=(64, 33))).astype(dtype)
    dy = rng.normal(size=x.shape).astype(dtype)
    gelu = GELU()
    y, dx = gelu(x), gelu.backward(dy)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = torch.nn.functional.gelu(x_torch)
    y_torch.backward(torch.tensor(dy))
    assert_close_to_torch(y, y_torch, "output")
    assert_close_to_torch(dx, x_torch.grad, "dx")


def test_linear_torch_init_draws_weight_and_bias_within_one_over_sqrt_fan_in():
    layer = Linear(64, 300, rng=0, init="torch")
    bound = 1 / 8
    for value in layer.params.values():
        assert 0.98 * bound < np.abs(value).max() <= bound
    with pytest.raises(ValueError, match="'he', 'glorot' or 'torch'"):
        Linear(2, 2, rng=0, init="kaiming")


# ---------------------------------------------------------------------------
# TransformerEncoderLayer: gradients and padding, every norm
# ---------------------------------------------------------------------------


#: Biases added right before a norm that cancels a per-feature bias (Post-LN with BatchNorm,
#: Batch Renorm or InstanceNorm: Norm.cancels_feature_bias): their gradient is 0, and a
#: relative error of two zeros is noise over noise.
CANCELLED_BIASES = ("self_attn.out_proj.bias", "linear2.bias")


@pytest.mark.parametrize("norm", list(NORM_KINDS))
@pytest.mark.parametrize("norm_first", [True, False])
def test_layer_gradients_match_finite_differences_with_holes_in_the_mask(norm, norm_first, rng):
    layer = small_layer(norm, norm_first, causal=True)
    randomize_params(layer, rng, scale=0.7)
    x = rng.normal(size=(4, 4, 4))
    mask = mask_with_holes(4, 4)
    errors = nl.gradcheck(layer, x, mask)
    assert set(errors) == {"input", *layer.params}
    if not norm_first and layer.norm1.cancels_feature_bias:
        layer(x, mask=mask)
        layer.backward(rng.normal(size=x.shape))
        for name in CANCELLED_BIASES:
            assert np.max(np.abs(layer.grads[name])) < 1e-12
            del errors[name]
    assert max(errors.values()) < GRADCHECK_TOLERANCE, errors


@pytest.mark.parametrize("norm_first", [True, False])
def test_layer_gradients_without_mask(norm_first, rng):
    layer = small_layer("layer", norm_first, activation="gelu")
    randomize_params(layer, rng, scale=0.7)
    errors = nl.gradcheck(layer, rng.normal(size=(3, 4, 4)))
    assert max(errors.values()) < GRADCHECK_TOLERANCE, errors


@pytest.mark.parametrize("norm", list(NORM_KINDS))
@pytest.mark.parametrize("norm_first", [True, False])
def test_layer_padding_is_exactly_zero_and_never_reaches_real_tokens(norm, norm_first, rng):
    layer = small_layer(norm, norm_first, causal=True, dtype=np.float32)
    randomize_params(layer, rng)
    mask = mask_with_holes(4, 5)
    x = rng.normal(size=(4, 5, 4)).astype(np.float32)
    junk = np.where(mask[..., None], x, np.float32(np.nan))
    y = layer(x, mask=mask)
    assert (y[~mask] == 0).all()
    np.testing.assert_array_equal(layer(junk, mask=mask), y)
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx = layer.backward(dy)
    assert (dx[~mask] == 0).all() and np.isfinite(dx).all()
    grads = {name: grad.copy() for name, grad in layer.grads.items()}
    dy[~mask] = 1e6  # a gradient arriving at padding is ignored
    layer(junk, mask=mask)
    np.testing.assert_array_equal(layer.backward(dy), dx)
    for name, grad in layer.grads.items():
        np.testing.assert_array_equal(grad, grads[name])


@pytest.mark.parametrize("norm", ["layer", "rms", "none"])
def test_causal_layer_output_does_not_depend_on_later_tokens(norm, rng):
    """Per-token norms keep the block causal (batch, group, instance do not: see causal_leak)."""
    layer = small_layer(norm, causal=True)
    x = rng.normal(size=(2, 6, 4))
    y = layer(x)
    changed = x.copy()
    changed[:, 3:] += rng.normal(size=(2, 3, 4))
    np.testing.assert_array_equal(layer(changed)[:, :3], y[:, :3])


def test_layer_state_dict_names_match_torch_and_include_batchnorm_buffers():
    names = set(small_layer("batch").state_dict())
    assert {"norm1.running_mean", "norm2.running_var", "norm1.num_batches_tracked"} <= names
    assert {"self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear2.bias"} <= names
    assert "norm1.bias" not in small_layer("rms").state_dict()
    assert not any(name.startswith("norm") for name in small_layer("none").state_dict())


def test_layer_rejects_bad_arguments_and_input():
    with pytest.raises(ValueError, match=r"activation must be one of \('relu', 'gelu'\)"):
        small_layer(activation="tanh")
    with pytest.raises(ValueError, match="norm must be one of"):
        small_layer("weight")
    with pytest.raises(ValueError, match="must be divisible by num_heads=3"):
        TransformerEncoderLayer(8, 3, 16, rng=0)
    layer = small_layer()
    with pytest.raises(ValueError, match=r"\(N, T, d_model=4\), got shape \(2, 3, 5\)"):
        layer(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"= \(2, 3\), got \(3, 2\)"):
        layer(np.zeros((2, 3, 4)), mask=np.ones((3, 2), dtype=bool))


# ---------------------------------------------------------------------------
# TransformerEncoderLayer: parity with torch
# ---------------------------------------------------------------------------


def torch_causal_mask(torch, length: int):
    return torch.ones(length, length, dtype=torch.bool).triu(1)


def torch_layer_call(torch, layer, x, mask, causal):
    keywords = {}
    if causal:
        keywords.update(src_mask=torch_causal_mask(torch, x.shape[1]), is_causal=True)
    if mask is not None:
        keywords["src_key_padding_mask"] = torch.tensor(~mask)
    return layer(x, **keywords)


def real_token_batchnorm(torch, num_features, dtype):
    """torch's BatchNorm1d over the real tokens of (N, T, C): masked BatchNorm by packing."""

    class RealTokenBatchNorm(torch.nn.BatchNorm1d):
        mask = None  # (N, T) bool tensor, set per call

        def forward(self, x):
            if self.mask is None:
                return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)
            out = torch.zeros_like(x)
            out[self.mask] = super().forward(x[self.mask])  # (real tokens, C)
            return out

    return RealTokenBatchNorm(num_features, dtype=dtype)


def compare_layer_with_torch(torch, ours, theirs, x, mask, causal, rng, cancelled=()):
    """Output, dx, every parameter gradient and the buffers after one step. The gradients of
    ``cancelled`` parameters are 0 in exact arithmetic: both sides must be rounding noise."""
    real = np.ones(x.shape[:2], dtype=bool) if mask is None else mask
    dy = rng.normal(size=x.shape).astype(x.dtype) * real[..., None]
    y = ours(x, mask=mask)
    dx = ours.backward(dy)
    x_torch = torch.tensor(x, requires_grad=True)
    theirs.zero_grad(set_to_none=True)
    y_torch = torch_layer_call(torch, theirs, x_torch, mask, causal)
    y_torch.backward(torch.tensor(dy))
    assert_close_to_torch(y[real], y_torch.detach()[torch.tensor(real)], "output")
    assert_close_to_torch(dx, x_torch.grad, "dx")
    gradients = ours.state_dict(grads=True)
    assert set(gradients) == {name for name, _ in theirs.named_parameters()}
    largest = max(float(parameter.grad.abs().max()) for parameter in theirs.parameters())
    noise = RELATIVE_TOLERANCE[np.dtype(x.dtype)] * largest
    for name, parameter in theirs.named_parameters():
        if name in cancelled:
            assert np.abs(gradients[name]).max() < noise and parameter.grad.abs().max() < noise
        else:
            assert_close_to_torch(gradients[name], parameter.grad, f"d{name}")
    state = ours.state_dict()
    for name, value in theirs.state_dict().items():  # running statistics too
        if name.endswith("num_batches_tracked"):
            assert int(state[name]) == int(value), name
        else:
            assert_close_to_torch(state[name], value, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize(
    ("causal", "padded", "activation"),
    [(False, False, "relu"), (True, True, "gelu"), (False, True, "relu")],
)
def test_layer_matches_torch(dtype, norm_first, causal, padded, activation, torch, rng):
    theirs = torch.nn.TransformerEncoderLayer(
        8,
        2,
        12,
        dropout=0.0,
        activation=activation,
        batch_first=True,
        norm_first=norm_first,
        dtype=torch_dtype(torch, dtype),
    )
    ours = TransformerEncoderLayer(
        8, 2, 12, activation=activation, norm_first=norm_first, causal=causal, rng=0, dtype=dtype
    )
    randomize_params(ours, rng)
    theirs.load_state_dict({name: torch.tensor(v) for name, v in ours.state_dict().items()})
    x = rng.normal(size=(4, 5, 8)).astype(dtype)
    mask = mask_with_holes(4, 5) if padded else None
    compare_layer_with_torch(torch, ours, theirs, x, mask, causal, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [True, False])
def test_layer_matches_torchs_inference_fast_path(dtype, norm_first, torch, rng):
    """In eval mode without gradients torch runs a fused kernel of its own: same output."""
    theirs = torch.nn.TransformerEncoderLayer(
        8,
        2,
        12,
        dropout=0.0,
        batch_first=True,
        norm_first=norm_first,
        dtype=torch_dtype(torch, dtype),
    ).eval()
    ours = TransformerEncoderLayer(8, 2, 12, norm_first=norm_first, rng=0, dtype=dtype).eval()
    randomize_params(ours, rng)
    theirs.load_state_dict({name: torch.tensor(v) for name, v in ours.state_dict().items()})
    x = rng.normal(size=(4, 5, 8)).astype(dtype)
    with torch.inference_mode():
        y_torch = theirs(torch.tensor(x))
    assert_close_to_torch(ours(x), y_torch, "output")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["rms", "batch"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_layer_with_rms_or_masked_batch_norm_matches_torch(dtype, norm, norm_first, torch, rng):
    tdtype = torch_dtype(torch, dtype)
    theirs = torch.nn.TransformerEncoderLayer(
        8, 2, 12, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=tdtype
    )
    ours = TransformerEncoderLayer(8, 2, 12, norm=norm, norm_first=norm_first, rng=0, dtype=dtype)
    mask = mask_with_holes(4, 5)
    if norm == "rms":
        theirs.norm1, theirs.norm2 = (torch.nn.RMSNorm(8, eps=1e-5, dtype=tdtype) for _ in "12")
    else:
        theirs.norm1, theirs.norm2 = (real_token_batchnorm(torch, 8, tdtype) for _ in "12")
        theirs.norm1.mask = theirs.norm2.mask = torch.tensor(mask)
    randomize_params(ours, rng)
    theirs.load_state_dict({name: torch.tensor(v) for name, v in ours.state_dict().items()})
    cancelled = CANCELLED_BIASES if norm == "batch" and not norm_first else ()
    for _ in range(2):  # BatchNorm: the running statistics after each step too
        x = rng.normal(size=(4, 5, 8)).astype(dtype)
        compare_layer_with_torch(torch, ours, theirs, x, mask, False, rng, cancelled)


# ---------------------------------------------------------------------------
# TransformerLM
# ---------------------------------------------------------------------------


def tiny_lm(dtype=np.float64, **options) -> TransformerLM:
    sizes = {"d_model": 4, "num_heads": 2, "num_layers": 2, "dim_feedforward": 6}
    return TransformerLM(5, 6, **{**sizes, **options}, rng=0, dtype=dtype)


def parameter_gradcheck(model, ids, mask, rng, zero=()) -> dict:
    """Finite differences of ``Σ g · logits`` (random g) for every parameter: ids have no
    gradient, so ``nl.gradcheck``'s input check does not apply. The parameters in ``zero``
    have gradient 0 in exact arithmetic: both gradients must be below the noise instead."""
    probe = copy.deepcopy(model)
    upstream = rng.normal(size=(*ids.shape, probe.config.vocab_size))

    def loss() -> float:
        return float(np.sum(probe(ids, mask=mask) * upstream))

    loss()
    probe.backward(upstream)
    analytic = {name: grad.copy() for name, grad in probe.grads.items()}
    errors = {}
    for name, value in probe.params.items():
        numeric = numerical_gradient(loss, value)
        if name in zero:
            assert np.abs(analytic[name]).max() < 1e-12 and np.abs(numeric).max() < 1e-8, name
            errors[name] = 0.0
        else:
            errors[name] = relative_error(analytic[name], numeric)
    return errors


@pytest.mark.parametrize(
    ("norm", "norm_first", "positions"),
    [("layer", True, "learned"), ("batch", True, "sinusoidal"), ("rms", False, "none")],
)
def test_lm_gradients_match_finite_differences(norm, norm_first, positions, rng):
    model = tiny_lm(norm=norm, norm_first=norm_first, positions=positions)
    randomize_params(model, rng, scale=0.7)
    ids = rng.integers(0, 5, size=(4, 5))
    # With BatchNorm in every norm (final norm included), adding a constant vector to the
    # residual stream changes nothing: each norm subtracts it. So the biases that add into
    # the stream have gradient 0.
    zero = ()
    if norm == "batch":
        zero = tuple(f"blocks.{i}.{name}" for i in range(2) for name in CANCELLED_BIASES)
    errors = parameter_gradcheck(model, ids, mask_with_holes(4, 5), rng, zero)
    assert set(errors) == set(model.params)
    assert max(errors.values()) < GRADCHECK_TOLERANCE, errors


def test_lm_is_causal_and_padding_is_zero(rng):
    model = tiny_lm()
    ids = rng.integers(0, 5, size=(3, 6))
    logits = model(ids)
    changed = ids.copy()
    changed[:, 4:] = (changed[:, 4:] + 1) % 5
    np.testing.assert_array_equal(model(changed)[:, :4], logits[:, :4])
    mask = mask_with_holes(3, 6)
    padded = model(np.where(mask, ids, -1), mask=mask)  # any id at padding
    assert (padded[~mask] == 0).all() and np.isfinite(padded).all()


def test_lm_structure_names_and_final_norm_default():
    pre, post = tiny_lm(norm_first=True), tiny_lm(norm_first=False)
    assert "final_norm.weight" in pre.state_dict() and "final_norm.weight" not in post.state_dict()
    assert "final_norm.weight" in tiny_lm(norm_first=False, final_norm=True).state_dict()
    names = set(pre.state_dict())
    assert {"token_embedding.weight", "position_embedding.weight", "head.bias"} <= names
    assert "blocks.1.self_attn.in_proj_weight" in names
    assert not any("position" in name for name in tiny_lm(positions="sinusoidal").state_dict())


def test_lm_config_round_trip_and_checks():
    model = tiny_lm(norm="batch", norm_kwargs={"momentum": 0.05})
    config = model.config
    assert config.batchnorm_momentum == 0.05 and config.uses_final_norm
    rebuilt = TransformerLM.from_config(config, rng=0, dtype=np.float64)
    assert rebuilt.config == config
    ids = np.arange(12).reshape(2, 6) % 5
    np.testing.assert_array_equal(rebuilt(ids), model(ids))  # same rng, same weights
    with pytest.raises(ValueError, match="d_model=6 must be divisible by num_heads=4"):
        TransformerLMConfig(vocab_size=5, context_length=4, d_model=6, num_heads=4)
    with pytest.raises(ValueError, match="positions must be one of"):
        TransformerLMConfig(vocab_size=5, context_length=4, positions="rotary")


def test_learned_positions_stop_at_the_table_and_the_others_run_longer(rng):
    ids = rng.integers(0, 5, size=(2, 9))  # context_length is 6
    with pytest.raises(ValueError, match=r"9 positions.*context_length=6.*'sinusoidal'"):
        tiny_lm()(ids)
    for positions in ("sinusoidal", "none"):
        logits = tiny_lm(positions=positions)(ids)
        assert logits.shape == (2, 9, 5) and np.isfinite(logits).all()


def test_sinusoidal_positions_follow_the_formula():
    table = sinusoidal_positions(50, 6)
    t, i = 37, 2  # entry (t, 2i) and (t, 2i + 1)
    angle = t / 10000 ** (2 * i / 6)
    assert table[t, 2 * i] == pytest.approx(np.sin(angle), rel=1e-14)
    assert table[t, 2 * i + 1] == pytest.approx(np.cos(angle), rel=1e-14)
    assert sinusoidal_positions(4, 5).shape == (4, 5)  # odd widths too


def test_lm_rejects_bad_ids():
    model = tiny_lm()
    with pytest.raises(TypeError, match="integer token ids"):
        model(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        model(np.full((2, 3), 5))
    with pytest.raises(ValueError, match=r"ids \(N, T\), got shape \(3,\)"):
        model(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"shape of the token ids \(2, 3\), got \(2, 4\)"):
        model(np.zeros((2, 3), dtype=np.int64), mask=np.ones((2, 4), dtype=bool))


def test_generate_is_deterministic_and_restores_the_mode():
    model = tiny_lm(dtype=np.float32)
    first = model.generate([1, 2], 10, rng=3)
    assert model.training
    np.testing.assert_array_equal(model.generate([1, 2], 10, rng=3), first)
    assert first.shape == (12,) and first.min() >= 0 and first.max() < 5


class TorchLM:
    """The same language model assembled from torch modules (names as normlab's state_dict)."""

    @staticmethod
    def build(torch, config: TransformerLMConfig, dtype):
        tdtype = torch_dtype(torch, dtype)

        class Model(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                width = config.d_model
                self.token_embedding = torch.nn.Embedding(config.vocab_size, width, dtype=tdtype)
                self.position_embedding = torch.nn.Embedding(
                    config.context_length, width, dtype=tdtype
                )
                self.blocks = torch.nn.ModuleList(
                    torch.nn.TransformerEncoderLayer(
                        width,
                        config.num_heads,
                        config.dim_feedforward,
                        dropout=0.0,
                        activation=config.activation,
                        batch_first=True,
                        norm_first=config.norm_first,
                        dtype=tdtype,
                    )
                    for _ in range(config.num_layers)
                )
                if config.uses_final_norm:
                    self.final_norm = torch.nn.LayerNorm(width, dtype=tdtype)
                self.head = torch.nn.Linear(width, config.vocab_size, dtype=tdtype)

            def forward(self, ids, mask):
                length = ids.shape[1]
                h = self.token_embedding(ids) + self.position_embedding(torch.arange(length))
                for block in self.blocks:
                    h = torch_layer_call(torch, block, h, mask, causal=True)
                if config.uses_final_norm:
                    h = self.final_norm(h)
                return self.head(h)

        return Model()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [True, False])
def test_lm_matches_the_same_model_assembled_from_torch_modules(dtype, norm_first, torch, rng):
    ours = TransformerLM(7, 6, 8, 2, 2, 12, norm_first=norm_first, rng=0, dtype=dtype)
    theirs = TorchLM.build(torch, ours.config, dtype)
    randomize_params(ours, rng)
    theirs.load_state_dict({name: torch.tensor(v) for name, v in ours.state_dict().items()})
    ids = rng.integers(0, 7, size=(4, 6))
    targets = rng.integers(0, 7, size=(4, 6))
    mask = mask_with_holes(4, 6)  # every row starts with a real token: torch gives no NaN

    loss, dlogits = ours.loss(ids, targets, mask)
    ours.backward(dlogits)
    logits_torch = theirs(torch.tensor(ids), mask)
    real = torch.tensor(mask)
    loss_torch = torch.nn.functional.cross_entropy(logits_torch[real], torch.tensor(targets)[real])
    loss_torch.backward()

    assert loss == pytest.approx(loss_torch.item(), rel=RELATIVE_TOLERANCE[np.dtype(dtype)])
    assert_close_to_torch(ours(ids, mask=mask)[mask], logits_torch.detach()[real], "logits")
    gradients = ours.state_dict(grads=True)
    assert set(gradients) == {name for name, _ in theirs.named_parameters()}
    for name, parameter in theirs.named_parameters():
        assert_close_to_torch(gradients[name], parameter.grad, f"d{name}")


# ---------------------------------------------------------------------------
# The README's torch example (a ```python torch block: test_readme.py runs the others)
# ---------------------------------------------------------------------------


def test_readme_torch_example_runs_and_prints_what_its_comments_say(torch, capsys):
    blocks = re.findall(r"```python torch\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has no ```python torch example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
        expected = [
            line.split("#", 1)[1].strip().split(":")[0]
            for line in block.splitlines()
            if line.startswith("print(") and "#" in line
        ]
        assert capsys.readouterr().out.splitlines() == expected


@pytest.mark.parametrize(
    "module",
    [activations, attention, embedding, transformer, models, optim, data],
    ids=lambda module: module.__name__,
)
def test_docstring_examples_run_as_written(module):
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_relu_gives_exactly_what_np_where_gives_with_nan_inf_and_signed_zeros():
    x = np.array([[-1.5, -0.0, 0.0, 2.0, np.nan, np.inf, -np.inf]])
    relu = nn.ReLU()
    y = relu(x)
    expected = np.where(x > 0, x, 0.0)
    np.testing.assert_array_equal(y, expected)
    assert not np.signbit(y).any()
    for dy in (np.full_like(x, -3.0), np.array([[np.inf, np.nan, -1.0, 1.0, 2.0, -np.inf, 5.0]])):
        dx = relu.backward(dy)
        np.testing.assert_array_equal(dx, np.where(x > 0, dy, 0.0))
        assert not np.signbit(dx[~(x > 0)]).any()
