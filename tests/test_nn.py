"""Tests of normlab.nn: gradients, causality, masking, optimizers and a digits training run."""

import numpy as np
import pytest

import normlab as nl
from normlab import nn
from normlab.data import iterate_minibatches, load_digits_split, make_sequence_task
from normlab.gradcheck import numerical_gradient

#: The kinds an MLP on (N, D) vectors can use (InstanceNorm needs a time or spatial axis).
VECTOR_KINDS = tuple(kind for kind in nl.NORM_KINDS if kind != "instance")

# float64 central differences with h = 1e-6 are accurate to about 1e-9 here; gradients
# that are 0 in exact arithmetic (a bias cancelled by a centering norm) come out ~1e-10.
RTOL, ATOL = 1e-5, 1e-7


def check_gradients(module, x, mask=None, seed=0):
    """Assert module.backward matches finite differences of L = sum(g * module(x)).

    ``g`` is a random upstream gradient: with g = 1 a BatchNorm output sums to a
    constant and a wrong backward could pass. The parameters are first moved off
    their initial values. Returns the analytic input gradient.
    """
    x = np.array(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for value in module.params.values():
        # Zero biases and unit norm weights are special points: a pre-activation of exactly 0
        # puts a ReLU kink under the finite difference, and gamma = 1 hides scale mistakes.
        value += 0.1 * rng.normal(size=value.shape)
    upstream = rng.normal(size=module(x, mask=mask).shape)

    def loss() -> float:
        return float(np.sum(module(x, mask=mask) * upstream))

    loss()
    analytic = {"input": module.backward(upstream)}
    analytic.update({name: np.array(grad) for name, grad in module.grads.items()})
    numeric = {"input": numerical_gradient(loss, x)}
    numeric.update({name: numerical_gradient(loss, value) for name, value in module.params.items()})
    assert analytic.keys() == numeric.keys()
    for name, expected in numeric.items():
        np.testing.assert_allclose(analytic[name], expected, rtol=RTOL, atol=ATOL, err_msg=name)
    return analytic["input"]


def right_padded_mask(lengths, length):
    """(N, T) bool, True for the first lengths[n] positions of row n."""
    return np.arange(length) < np.asarray(lengths)[:, None]


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("init", ["he", "glorot"])
def test_linear_gradients_2d(bias, init):
    layer = nn.Linear(4, 3, rng=0, bias=bias, init=init, dtype=np.float64)
    check_gradients(layer, np.random.default_rng(1).normal(size=(5, 4)))
    assert ("bias" in layer.params) == bias


def test_linear_gradients_3d_with_mask_zero_padding():
    layer = nn.Linear(3, 2, rng=0, dtype=np.float64)
    x = np.random.default_rng(1).normal(size=(3, 4, 3))
    mask = right_padded_mask([4, 2, 1], 4)
    dx = check_gradients(layer, x, mask=mask)
    assert np.all(layer(x, mask=mask)[~mask] == 0)
    assert np.all(dx[~mask] == 0)


def test_linear_init_statistics_and_determinism():
    he = nn.Linear(400, 300, rng=0).params["weight"]
    assert he.dtype == np.float32 and he.shape == (400, 300)
    assert abs(he.std() - np.sqrt(2 / 400)) < 0.01 * np.sqrt(2 / 400) * 5
    glorot = nn.Linear(400, 300, rng=0, init="glorot").params["weight"]
    limit = np.sqrt(6 / 700)
    assert np.abs(glorot).max() <= limit and np.abs(glorot).max() > 0.99 * limit
    np.testing.assert_array_equal(he, nn.Linear(400, 300, rng=0).params["weight"])
    assert not np.array_equal(he, nn.Linear(400, 300, rng=1).params["weight"])


def test_linear_rejects_bad_input():
    layer = nn.Linear(3, 2, rng=0)
    with pytest.raises(TypeError, match="astype"):
        layer(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="in_features=3"):
        layer(np.ones((2, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="Generator"):
        nn.Linear(3, 2, rng=None)
    with pytest.raises(RuntimeError, match="before any forward"):
        nn.Linear(3, 2, rng=0).backward(np.ones((2, 2)))


def test_relu_gradients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6))
    x = np.where(np.abs(x) < 0.05, 0.5, x)  # no input near the kink at 0
    check_gradients(nn.ReLU(), x)
    np.testing.assert_array_equal(nn.ReLU()(x), np.maximum(x, 0))


def test_tanh_gradients():
    check_gradients(nn.Tanh(), np.random.default_rng(0).normal(size=(3, 4, 5)))


def test_identity_passes_through():
    x = np.random.default_rng(0).normal(size=(3, 2))
    layer = nn.Identity()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)
    assert dict(layer.params) == {}


# ---------------------------------------------------------------------------
# Sequential, MLP
# ---------------------------------------------------------------------------


class _NoMaskLayer(nn.Module):
    """A layer whose call has no mask argument."""

    def forward(self, x):
        return 2 * x

    def __call__(self, x):
        return self.forward(x)

    def backward(self, dy):
        return 2 * dy


def test_sequential_flat_live_params_and_mask_passing():
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU(), _NoMaskLayer(), nn.Linear(4, 2, rng=1))
    assert list(model.params) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert model.params["3.weight"] is model[3].params["weight"]
    x = np.ones((2, 5, 3), dtype=np.float32)
    mask = right_padded_mask([5, 3], 5)
    y = model(x, mask=mask)  # the mask reaches the Linear layers, not _NoMaskLayer
    assert np.all(y[~mask] == 0)
    assert len(model.grads) == 0
    model.backward(np.ones_like(y))
    assert list(model.grads) == list(model.params)
    replaced = np.zeros((4, 2), dtype=np.float32)
    model[3].grads["weight"] = replaced  # a layer may replace its gradient arrays
    assert model.grads["3.weight"] is replaced
    with pytest.raises(KeyError):
        model.params["9.weight"]


def test_sequential_named_and_nested():
    inner = nn.Sequential({"fc": nn.Linear(2, 2, rng=0), "act": nn.Tanh()})
    model = nn.Sequential({"body": inner, "head": nn.Linear(2, 1, rng=1)})
    assert list(model.params) == ["body.fc.weight", "body.fc.bias", "head.weight", "head.bias"]
    assert model.params["body.fc.bias"] is inner[0].params["bias"]


def test_train_eval_reach_every_layer():
    model = nn.MLP(4, 8, 3, norm="batch", rng=0)
    assert model.eval() is model
    assert not model.training and all(not layer.training for layer in model)
    assert model.train() is model
    assert model.training and all(layer.training for layer in model)
    sequence_model = nn.SequenceModel(3, 8, 2, rng=0, norm="batch").eval()
    assert not sequence_model.blocks[1].norm.training and not sequence_model.final_norm.training


@pytest.mark.parametrize("norm", VECTOR_KINDS)
def test_mlp_gradients(norm):
    model = nn.MLP(5, 8, 3, norm=norm, rng=0, dtype=np.float64)
    check_gradients(model, np.random.default_rng(1).normal(size=(6, 5)))


def test_mlp_gradients_batchnorm_eval_and_tanh():
    model = nn.MLP(5, 8, 3, norm="batch", rng=0, activation="tanh", dtype=np.float64)
    x = np.random.default_rng(1).normal(size=(6, 5))
    model(x)  # one training step moves the running statistics away from (0, 1)
    check_gradients(model.eval(), x)


def test_mlp_structure():
    model = nn.MLP(64, [32, 16], 10, norm="batch", rng=0)
    names = [type(layer).__name__ for layer in model]
    assert names == ["Linear", "BatchNorm", "ReLU", "Linear", "BatchNorm", "ReLU", "Linear"]
    assert "0.bias" not in model.params  # cancelled by BatchNorm's mean subtraction
    assert "6.bias" in model.params
    assert "0.bias" in nn.MLP(64, 32, 10, norm="rms", rng=0).params  # RMSNorm does not center
    none_model = nn.MLP(64, 32, 10, norm="none", rng=0, depth=3)
    assert len(none_model) == 10 and isinstance(none_model[1], nn.Identity)
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    assert model(x).dtype == np.float32 and model(x).shape == (8, 10)
    same = nn.MLP(64, [32, 16], 10, norm="batch", rng=0)
    for name in model.params:
        np.testing.assert_array_equal(model.params[name], same.params[name])


# ---------------------------------------------------------------------------
# Sequence model
# ---------------------------------------------------------------------------

SEQ_LENGTHS = [5, 3, 1]


def small_sequence_model(**kwargs):
    defaults = {"rng": 0, "hidden": 5, "num_blocks": 2, "dtype": np.float64}
    return nn.SequenceModel(3, 4, 3, **{**defaults, **kwargs})


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_mask", [False, True])
def test_mean_mixing_gradients(causal, use_mask):
    layer = nn.MeanMixing(3, 4, causal=causal, rng=0, dtype=np.float64)
    x = np.random.default_rng(1).normal(size=(3, 5, 3))
    mask = right_padded_mask(SEQ_LENGTHS, 5) if use_mask else None
    dx = check_gradients(layer, x, mask=mask)
    if use_mask:
        assert np.all(dx[~mask] == 0)


def test_mean_mixing_matches_loop():
    layer = nn.MeanMixing(2, 3, causal=True, rng=0, dtype=np.float64)
    x = np.random.default_rng(1).normal(size=(2, 4, 2))
    mask = right_padded_mask([4, 2], 4)
    y = layer(x, mask=mask)
    weight_self, weight_context = layer.params["weight_self"], layer.params["weight_context"]
    for n in range(2):
        for t in range(4):
            real = [s for s in range(t + 1) if mask[n, s]]
            expected = x[n, t] @ weight_self + x[n, real].mean(axis=0) @ weight_context
            expected = (expected + layer.params["bias"]) * mask[n, t]
            np.testing.assert_allclose(y[n, t], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", nl.NORM_KINDS)
@pytest.mark.parametrize("causal", [False, True])
def test_sequence_model_gradients_with_mask(norm, causal):
    model = small_sequence_model(norm=norm, causal=causal)
    x = np.random.default_rng(1).normal(size=(3, 5, 3))
    mask = right_padded_mask(SEQ_LENGTHS, 5)
    dx = check_gradients(model, x, mask=mask)
    assert np.all(dx[~mask] == 0)
    assert np.all(model(x, mask=mask)[~mask] == 0)


@pytest.mark.parametrize(
    ("readout", "causal", "mask_norm"),
    [("mean", False, True), ("last", True, True), ("token", False, False), ("last", True, False)],
)
def test_sequence_model_gradients_readouts(readout, causal, mask_norm):
    model = small_sequence_model(norm="batch", readout=readout, causal=causal, mask_norm=mask_norm)
    x = np.random.default_rng(2).normal(size=(3, 5, 3))
    check_gradients(model, x, mask=right_padded_mask(SEQ_LENGTHS, 5))


def test_sequence_model_gradients_without_mask():
    check_gradients(small_sequence_model(norm="layer", causal=True), np.ones((2, 4, 3)) * 0.3)


def test_sequence_model_readout_shapes():
    x = np.zeros((4, 7, 3), dtype=np.float32)
    mask = right_padded_mask([7, 5, 3, 1], 7)
    for readout, shape in [("token", (4, 7, 2)), ("mean", (4, 2)), ("last", (4, 2))]:
        model = nn.SequenceModel(3, 8, 2, rng=0, readout=readout)
        out = model(x, mask=mask)
        assert out.shape == shape and out.dtype == np.float32


def _causal_models():
    return [
        ("none", small_sequence_model(norm="none", causal=True)),
        ("layer", small_sequence_model(norm="layer", causal=True)),
        ("rms", small_sequence_model(norm="rms", causal=True)),
        ("batch-eval", small_sequence_model(norm="batch", causal=True).eval()),
    ]


@pytest.mark.parametrize(("name", "model"), _causal_models())
def test_causal_output_does_not_depend_on_later_inputs(name, model):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 3))
    if name == "batch-eval":  # give BatchNorm running statistics that are not (0, 1)
        model.train()(x)
        model.eval()
    out = model(x)
    for t in range(6):
        perturbed = x.copy()
        perturbed[:, t + 1 :] += rng.normal(size=perturbed[:, t + 1 :].shape)
        np.testing.assert_array_equal(model(perturbed)[:, : t + 1], out[:, : t + 1])
        # the same from the gradient: d out[:, t] / d x[:, s] = 0 for s > t
        model(x)
        upstream = np.zeros_like(out)
        upstream[:, t] = rng.normal(size=upstream[:, t].shape)
        dx = model.backward(upstream)
        assert np.all(dx[:, t + 1 :] == 0)
        assert np.any(dx[:, : t + 1] != 0)


def test_non_causal_and_batchnorm_in_training_look_ahead():
    """The causal test has power: these models do see later tokens."""
    x = np.random.default_rng(0).normal(size=(3, 6, 3))
    perturbed = x.copy()
    perturbed[:, -1] += 1.0
    for model in [
        small_sequence_model(norm="layer", causal=False),
        small_sequence_model(norm="batch", causal=True),  # training mode: batch statistics
        small_sequence_model(norm="group", causal=True),  # averages over time per sample
    ]:
        assert not np.allclose(model(perturbed)[:, 0], model(x)[:, 0])


@pytest.mark.parametrize("norm", ["batch", "layer", "rms", "group"])
def test_padding_content_and_amount_do_not_change_real_outputs(norm):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 3))
    mask = right_padded_mask(SEQ_LENGTHS, 5)
    model = small_sequence_model(norm=norm)
    out = model(x, mask=mask)
    garbage = np.where(mask[..., None], x, rng.normal(size=x.shape) * 100)
    np.testing.assert_allclose(model(garbage, mask=mask), out, rtol=1e-12, atol=1e-12)
    longer = np.concatenate([garbage, rng.normal(size=(3, 4, 3))], axis=1)  # 4 more pads
    longer_mask = right_padded_mask(SEQ_LENGTHS, 9)
    np.testing.assert_allclose(model(longer, mask=longer_mask)[:, :5], out, atol=1e-12)


def test_unmasked_batchnorm_counts_padding():
    """With mask_norm=False, BatchNorm statistics depend on the amount of padding."""
    x = np.random.default_rng(0).normal(size=(3, 5, 3))
    model = small_sequence_model(norm="batch", mask_norm=False)
    mask = right_padded_mask(SEQ_LENGTHS, 5)
    out = model(x, mask=mask)
    longer = np.concatenate([x, np.zeros((3, 4, 3))], axis=1)
    longer_out = model(longer, mask=right_padded_mask(SEQ_LENGTHS, 9))[:, :5]
    assert not np.allclose(longer_out[mask], out[mask])


def test_masked_positions_contribute_nothing_to_loss_or_gradients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 3))
    mask = right_padded_mask(SEQ_LENGTHS, 5)
    targets = rng.integers(0, 3, size=(3, 5))
    results = []
    for pad_value, pad_target in [(0.0, 0), (50.0, 2)]:
        model = small_sequence_model(norm="batch", causal=True)
        padded_x = np.where(mask[..., None], x, pad_value)
        padded_targets = np.where(mask, targets, pad_target)
        loss, dlogits = nn.softmax_cross_entropy(model(padded_x, mask=mask), padded_targets, mask)
        model.backward(dlogits)
        results.append((loss, {name: grad.copy() for name, grad in model.grads.items()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-12)
    for name in grads_a:
        np.testing.assert_allclose(grads_a[name], grads_b[name], rtol=1e-10, atol=1e-12)


def test_sequence_model_learns_running_mean_task_and_generalizes_to_longer_sequences():
    train = make_sequence_task(512, 4, 16, 3, rng=0)
    test_long = make_sequence_task(64, 64, 64, 3, rng=1)
    model = nn.SequenceModel(3, 16, 2, rng=0, norm="layer", causal=True)
    optimizer = nn.Adam(model.params, model.grads, lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(8):
        for index in iterate_minibatches(len(train), 32, rng):
            logits = model(train.x[index], mask=train.mask[index])
            _, dlogits = nn.softmax_cross_entropy(logits, train.y[index], train.mask[index])
            model.backward(dlogits)
            optimizer.step()
    model.eval()
    long_accuracy = nn.accuracy(
        model(test_long.x, mask=test_long.mask), test_long.y, test_long.mask
    )
    assert long_accuracy > 0.9  # the best context-free rule gets about 0.6


# ---------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------


def _reference_cross_entropy(logits, targets):
    log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    return -np.mean(np.take_along_axis(log_probs, targets[..., None], axis=-1))


def test_softmax_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3, 5))
    targets = rng.integers(0, 5, size=(4, 3))
    loss, dlogits = nn.softmax_cross_entropy(logits, targets)
    assert loss == pytest.approx(_reference_cross_entropy(logits, targets), rel=1e-12)

    def loss_only() -> float:
        return nn.softmax_cross_entropy(logits, targets)[0]

    np.testing.assert_allclose(dlogits, numerical_gradient(loss_only, logits), atol=1e-9)
    np.testing.assert_allclose(dlogits.sum(axis=-1), 0, atol=1e-15)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [5e3, 5e3, 0.0]], dtype=np.float32)
    loss, dlogits = nn.softmax_cross_entropy(logits, np.array([1, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert loss == pytest.approx((1e4 + np.log(2)) / 2, rel=1e-5)  # (-log p(1) - log(1/2)) / 2
    assert dlogits.dtype == np.float32
    shifted_loss, _ = nn.softmax_cross_entropy(logits[:1] - 1e4, np.array([1]))
    assert shifted_loss == pytest.approx(nn.softmax_cross_entropy(logits[:1], np.array([1]))[0])


def test_softmax_cross_entropy_mask_ignores_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 5))
    targets = rng.integers(0, 5, size=(3, 4))
    mask = right_padded_mask([4, 2, 1], 4)
    loss, dlogits = nn.softmax_cross_entropy(logits, np.where(mask, targets, -1), mask)
    assert loss == pytest.approx(_reference_cross_entropy(logits[mask], targets[mask]), rel=1e-12)
    assert np.all(dlogits[~mask] == 0)
    changed = np.where(mask[..., None], logits, 1e3)
    assert nn.softmax_cross_entropy(changed, targets, mask)[0] == pytest.approx(loss, rel=1e-12)
    empty_loss, empty_grad = nn.softmax_cross_entropy(logits, targets, np.zeros((3, 4), bool))
    assert empty_loss == 0.0 and np.all(empty_grad == 0)


def test_softmax_cross_entropy_rejects_bad_targets():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        nn.softmax_cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(TypeError, match="integers"):
        nn.softmax_cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        nn.softmax_cross_entropy(logits, np.array([0, 1, 2]))


def test_accuracy():
    logits = np.array([[[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]]])
    assert nn.accuracy(logits, np.array([[0, 1, 1]])) == pytest.approx(2 / 3)
    assert nn.accuracy(logits, np.array([[0, 1, 1]]), np.array([[True, True, False]])) == 1.0


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------


def _quadratic_problem():
    """L(p) = 0.5 * sum(curvature * (p - optimum)^2), an ill-conditioned bowl."""
    rng = np.random.default_rng(0)
    curvature = np.array([[1.0, 10.0], [0.1, 3.0]])
    optimum = rng.normal(size=(2, 2))
    params = {"w": np.zeros((2, 2)), "b": np.ones(3)}
    grads = {}

    def loss_and_grads() -> float:
        grads["w"] = curvature * (params["w"] - optimum)
        grads["b"] = params["b"].copy()  # L_b = 0.5 * |b|^2
        deviation = params["w"] - optimum
        return 0.5 * float(np.sum(curvature * deviation**2) + np.sum(params["b"] ** 2))

    return params, grads, loss_and_grads


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p, g: nn.SGD(p, g, lr=0.05, momentum=0.9),
        lambda p, g: nn.SGD(p, g, lr=0.05, momentum=0.0),
        lambda p, g: nn.Adam(p, g, lr=0.05),
    ],
    ids=["sgd-momentum", "sgd", "adam"],
)
def test_optimizers_minimize_a_quadratic_in_place(make_optimizer):
    params, grads, loss_and_grads = _quadratic_problem()
    weight_array = params["w"]
    optimizer = make_optimizer(params, grads)
    initial = loss_and_grads()
    for _ in range(1000):
        loss_and_grads()
        optimizer.step()
    assert loss_and_grads() < 1e-4 * initial
    assert params["w"] is weight_array  # updated in place


def test_weight_decay_shrinks_parameters_without_gradient_signal():
    params = {"w": np.ones(3)}
    grads = {"w": np.zeros(3)}
    optimizer = nn.SGD(params, grads, lr=0.1, momentum=0.0, weight_decay=0.5)
    optimizer.step()
    np.testing.assert_allclose(params["w"], 1 - 0.1 * 0.5)


def test_optimizer_on_a_model_sees_new_gradients_and_reports_missing_ones():
    model = nn.MLP(4, 8, 3, norm="layer", rng=0)
    optimizer = nn.SGD(model.params, model.grads, lr=0.1)
    with pytest.raises(KeyError, match="backward"):
        optimizer.step()
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    targets = np.arange(16) % 3
    losses = []
    for _ in range(50):
        loss, dlogits = nn.softmax_cross_entropy(model(x), targets)
        model.backward(dlogits)
        optimizer.step()
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]
    assert all(value.dtype == np.float32 for value in model.params.values())


# ---------------------------------------------------------------------------
# End to end: digits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("norm", VECTOR_KINDS)
def test_mlp_on_digits_reaches_90_percent(norm):
    split = load_digits_split()
    model = nn.MLP(split.num_features, 64, split.num_classes, norm=norm, rng=0)
    optimizer = nn.SGD(model.params, model.grads, lr=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    for _ in range(3):  # epochs of 42 steps at batch size 32
        for index in iterate_minibatches(len(split.y_train), 32, rng):
            logits = model(split.x_train[index])
            _, dlogits = nn.softmax_cross_entropy(logits, split.y_train[index])
            model.backward(dlogits)
            optimizer.step()
    model.eval()
    assert nn.accuracy(model(split.x_test), split.y_test) > 0.9


# ---------------------------------------------------------------------------
# Optional: PyTorch parity (the ``torch`` fixture of conftest.py skips without torch)
# ---------------------------------------------------------------------------


def test_linear_and_cross_entropy_match_torch(torch):
    rng = np.random.default_rng(0)
    layer = nn.Linear(4, 3, rng=0, dtype=np.float64)
    x = rng.normal(size=(6, 4))
    targets = rng.integers(0, 3, size=6)
    loss, dlogits = nn.softmax_cross_entropy(layer(x), targets)
    dx = layer.backward(dlogits)

    x_t = torch.tensor(x, requires_grad=True)
    weight_t = torch.tensor(layer.params["weight"].T.copy(), requires_grad=True)  # (out, in)
    bias_t = torch.tensor(layer.params["bias"], requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(
        torch.nn.functional.linear(x_t, weight_t, bias_t), torch.tensor(targets)
    )
    loss_t.backward()
    assert loss == pytest.approx(loss_t.item(), rel=1e-12)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(layer.grads["weight"], weight_t.grad.numpy().T, rtol=1e-10)
    np.testing.assert_allclose(layer.grads["bias"], bias_t.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizer_updates_match_torch(kind, torch):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 2))
    gradients = [rng.normal(size=(3, 2)) for _ in range(5)]
    params, grads = {"w": start.copy()}, {}
    param_t = torch.nn.Parameter(torch.tensor(start))
    if kind == "sgd":
        optimizer = nn.SGD(params, grads, lr=0.1, momentum=0.9, weight_decay=0.01)
        optimizer_t = torch.optim.SGD([param_t], lr=0.1, momentum=0.9, weight_decay=0.01)
    else:
        optimizer = nn.Adam(params, grads, lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
        optimizer_t = torch.optim.Adam(
            [param_t], lr=0.1, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01
        )
    for gradient in gradients:
        grads["w"] = gradient
        optimizer.step()
        param_t.grad = torch.tensor(gradient)
        optimizer_t.step()
    np.testing.assert_allclose(params["w"], param_t.detach().numpy(), rtol=1e-12, atol=1e-14)
