"""The one module interface (normlab.module) and the one factory of kinds (normlab.make_norm).

* every module starts with no gradients, and "no gradient yet" is not "zero";
* a parameter replaced by an array of the wrong shape is caught before any arithmetic;
* ``state_dict`` / ``load_state_dict`` round-trip, and a bad state names every problem and
  changes nothing;
* ``make_norm`` builds every kind of the registry, gives each kind only its own options,
  and rejects keywords and kinds that do not exist;
* the layer behaviour PyTorch users rely on: GroupNorm needs more than one value per group,
  the running buffers' existence decides what BatchNorm's eval mode uses, ``bias=False``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import LAYER_KINDS, build_layer

import normlab as nl
from normlab import nn
from normlab.module import Container, Module

X_SHAPE = (4, 5, 6)  # (N, T, C)


def test_every_kind_of_the_registry_is_built_by_make_norm():
    expected = {
        "none": nl.module.Identity,
        "batch": nl.BatchNorm,
        "batch_renorm": nl.BatchRenorm,
        "layer": nl.LayerNorm,
        "rms": nl.RMSNorm,
        "group": nl.GroupNorm,
        "instance": nl.InstanceNorm,
    }
    assert set(nl.NORM_KINDS) == set(expected)
    for kind, layer_class in expected.items():
        layer = nl.make_norm(kind, 8)
        assert type(layer) is layer_class, kind
        assert isinstance(layer, Module)


def test_make_norm_gives_each_kind_only_the_options_it_takes():
    assert nl.make_norm("batch", 8, momentum=None).momentum is None
    layer = nl.make_norm("layer", 8, momentum=None, num_groups=2, eps=1e-3)  # two not its own
    assert isinstance(layer, nl.LayerNorm) and layer.eps == 1e-3
    group = nl.make_norm("group", 64)
    assert group.num_groups == nl.layers.default_num_groups(64) == 8
    assert nl.make_norm("group", 64, num_groups=4).num_groups == 4
    assert nl.make_norm("rms", 8, dtype=np.float64).params["weight"].dtype == np.float64
    # one switch under two names: each kind picks the one it has
    assert "weight" not in nl.make_norm("batch", 8, affine=False, elementwise_affine=False).params
    assert "weight" not in nl.make_norm("layer", 8, affine=False, elementwise_affine=False).params


def test_make_norm_rejects_unknown_kinds_and_keywords_no_kind_takes():
    with pytest.raises(ValueError, match=r"kind must be one of.*'batchnorm'"):
        nl.make_norm("batchnorm", 8)
    with pytest.raises(TypeError, match="momentun"):
        nl.make_norm("batch", 8, momentun=0.1)
    with pytest.raises(ValueError, match="num_features must be a positive integer"):
        nl.make_norm("none", 0)


@pytest.mark.parametrize(
    ("kind", "options"),
    [(kind, {}) for kind in nl.NORM_KINDS]
    + [("group", {"num_groups": 6}), ("group", {"num_groups": 1})],
)
def test_cancels_feature_bias_says_whether_a_bias_before_the_layer_changes_its_output(
    kind, options, rng
):
    """The MLP and the CNN drop the bias of the layer before exactly these norms."""
    layer = nl.make_norm(kind, 6, dtype=np.float64, **options)
    x = rng.normal(size=(8, 5, 6))
    bias = rng.normal(size=6)
    changed = np.abs(layer(x + bias) - layer(x)).max()
    if layer.cancels_feature_bias:
        assert changed < 1e-12
    else:
        assert changed > 1e-3


def test_the_mlp_has_a_linear_bias_exactly_where_the_norm_does_not_cancel_it():
    for kind in ("none", "batch", "layer", "rms", "group", "batch_renorm"):
        model = nn.MLP(6, 8, 3, norm=kind, rng=0)
        assert ("0.bias" in model.params) == (not model[1].cancels_feature_bias), kind


# ---------------------------------------------------------------------------
# Gradients: absent until computed
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: build_layer("batch"),
        lambda: build_layer("layer"),
        lambda: build_layer("rms"),
        lambda: build_layer("group"),
        lambda: nl.InstanceNorm(6, affine=True, dtype=np.float64),
        lambda: nn.Linear(6, 3, rng=0, dtype=np.float64),
        lambda: nn.MLP(6, 8, 3, norm="batch", rng=0, dtype=np.float64),
    ],
    ids=["batch", "layer", "rms", "group", "instance", "linear", "mlp"],
)
def test_there_is_no_gradient_before_the_first_backward(make, rng):
    module = make()
    assert len(module.params) > 0
    assert dict(module.grads) == {}  # not zeros: "no gradient yet" must not read as "zero"
    with pytest.raises(RuntimeError, match="no gradient"):
        module.state_dict(grads=True)
    x = rng.normal(size=(4, 3, 6) if isinstance(module, nl.InstanceNorm) else (4, 6))
    y = module(x)
    module.backward(rng.normal(size=y.shape))
    assert set(module.grads) == set(module.params)
    assert set(module.state_dict(grads=True)) == set(module.params)  # no buffers


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_a_parameter_replaced_by_the_wrong_shape_is_named_before_any_arithmetic(kind, rng):
    layer = build_layer(kind)
    layer.params["weight"] = np.array([2.0, 2.0])
    with pytest.raises(ValueError, match=r"params\['weight'\].*\(6,\).*\(2,\).*\[\.\.\.\]"):
        layer(rng.normal(size=X_SHAPE))


def test_a_linear_weight_of_the_wrong_shape_is_named(rng):
    linear = nn.Linear(6, 3, rng=0)
    linear.params["weight"] = np.zeros((3, 6), dtype=np.float32)
    with pytest.raises(ValueError, match=r"Linear: params\['weight'\].*\(6, 3\).*\(3, 6\)"):
        linear(rng.normal(size=(2, 6)).astype(np.float32))


# ---------------------------------------------------------------------------
# state_dict
# ---------------------------------------------------------------------------


def test_state_dict_names_and_layouts_follow_torch():
    assert list(nl.BatchNorm(3).state_dict()) == [
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    tracked = nl.BatchNorm(3).state_dict()["num_batches_tracked"]
    assert tracked.dtype == np.int64 and tracked.shape == ()
    assert list(nl.BatchNorm(3, track_running_stats=False, bias=False).state_dict()) == ["weight"]
    assert list(nl.LayerNorm(4, bias=False).state_dict()) == ["weight"]
    assert list(nl.InstanceNorm(4).state_dict()) == []
    linear = nn.Linear(5, 3, rng=0)
    assert linear.state_dict()["weight"].shape == (3, 5)  # torch keeps (out, in)
    mlp = nn.MLP(5, 4, 2, norm="batch", rng=0, depth=1)
    assert list(mlp.state_dict()) == [
        "0.weight",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "3.weight",
        "3.bias",
    ]


def test_state_dict_round_trips_and_loads_in_place(rng):
    source = nn.MLP(5, 4, 2, norm="batch", rng=0, dtype=np.float64)
    source(rng.normal(size=(8, 5)))  # moves the running statistics
    target = nn.MLP(5, 4, 2, norm="batch", rng=1, dtype=np.float64)
    weight_array = target.params["0.weight"]
    target.load_state_dict(source.state_dict())
    assert target.params["0.weight"] is weight_array  # optimizers keep their references
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], value, err_msg=name)
    assert target[1].num_batches_tracked == 1
    x = rng.normal(size=(3, 5))
    np.testing.assert_array_equal(target.eval()(x), source.eval()(x))


def test_a_bad_state_names_every_problem_and_changes_nothing():
    layer = nl.BatchNorm(3)
    state = layer.state_dict()
    state["running_mean"] = np.ones(4, dtype=np.float32)
    state["extra"] = np.zeros(1)
    del state["bias"]
    before = layer.state_dict()
    with pytest.raises(ValueError) as error:
        layer.load_state_dict(state)
    message = str(error.value)
    for words in ("missing ['bias']", "unexpected ['extra']", "running_mean", "(3,)", "(4,)"):
        assert words in message
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_containers_hold_only_modules():
    with pytest.raises(TypeError, match="child '1' must be a normlab Module"):
        nn.Sequential(nn.Linear(2, 2, rng=0), lambda x: x)
    assert isinstance(nn.Sequential(nn.ReLU()), Container)


# ---------------------------------------------------------------------------
# Layer behaviour that follows torch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_groupnorm_with_one_value_per_group_is_rejected_in_both_modes(training, rng):
    layer = nl.GroupNorm(10, 10).train(training)
    with pytest.raises(ValueError, match=r"more than 1 value per group.*got 1.*fewer groups"):
        layer(rng.random((1, 1, 10)))
    with pytest.raises(ValueError, match="more than 1 value per group"):
        nl.GroupNorm(4, 4).train(training)(rng.random((3, 4)))
    assert nl.GroupNorm(4, 4)(rng.random((3, 2, 4))).shape == (3, 2, 4)  # 2 values per group


@pytest.mark.parametrize("shape", [(3, 4), (3, 1, 4)])
def test_instancenorm_needs_more_than_one_position(shape, rng):
    with pytest.raises(ValueError, match="InstanceNorm"):
        nl.InstanceNorm(4)(rng.random(shape))


def test_running_buffers_decide_what_batchnorm_eval_uses(rng):
    layer = nl.BatchNorm(6, dtype=np.float64)
    layer(rng.normal(3.0, 2.0, size=(16, 6)))
    running_mean = layer.running_mean.copy()
    layer.track_running_stats = False  # freeze the statistics
    layer(rng.normal(-5.0, 1.0, size=(16, 6)))  # training mode: batch statistics, no update
    np.testing.assert_array_equal(layer.running_mean, running_mean)
    assert layer.num_batches_tracked == 1
    layer.eval()
    x = rng.normal(size=(4, 6))
    expected = (x - layer.running_mean) / np.sqrt(layer.running_var + layer.eps)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12)  # the buffers, not the batch


@pytest.mark.parametrize(
    "make", [lambda: nl.BatchNorm(4, bias=False), lambda: nl.GroupNorm(2, 4, bias=False)]
)
def test_bias_false_keeps_the_weight_only(make, rng):
    layer = make()
    assert list(layer.params) == ["weight"]
    x = rng.normal(size=(5, 3, 4)).astype(np.float32)
    y = layer(x)
    layer.backward(np.ones_like(y))
    assert set(layer.grads) == {"weight"}
    assert "bias=False" in repr(layer)


@pytest.mark.parametrize("x_shape", [(3, 5, 4), (2, 3, 4, 4)], ids=["NLC", "NHWC"])
@pytest.mark.parametrize("use_mask", [False, True])
def test_instancenorm_backward_matches_finite_differences(x_shape, use_mask, rng):
    layer = build_layer("instance", 4, rng=rng)
    mask = None
    if use_mask:
        mask = np.ones(x_shape[:-1], dtype=bool)
        mask.flat[1::3] = False
    errors = nl.gradcheck(layer, rng.normal(0.5, 2.0, size=x_shape), mask=mask)
    assert max(errors.values()) < 1e-7, errors
