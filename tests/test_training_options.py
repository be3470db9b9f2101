"""The training loop's options for the training-dynamics experiments: initialization scale,
a hook after every step, and train-mode measurements that leave BatchNorm as it was."""

from __future__ import annotations

import numpy as np
import pytest

from normlab import nn, training


def test_init_scale_multiplies_every_linear_and_conv_weight_and_nothing_else():
    built = nn.CNN(1, 10, widths=(4, 8), norm="batch", rng=0)
    scaled = nn.CNN(1, 10, widths=(4, 8), norm="batch", rng=0)
    training.scale_initial_weights(scaled, 0.01)
    for name, value in built.params.items():
        layer = scaled[int(name.split(".")[0])]
        factor = (
            0.01 if name.endswith("weight") and isinstance(layer, (nn.Linear, nn.Conv2d)) else 1
        )
        np.testing.assert_allclose(scaled.params[name], factor * value, rtol=1e-6)
    assert any(isinstance(layer, nn.Conv2d) for layer in scaled)  # both kinds were scaled


def test_init_scale_one_is_the_default_network_exactly():
    default = training.train_mlp(norm="layer", batch_size=64, seed=1, epochs=1, steps=5)
    explicit = training.train_mlp(
        norm="layer", batch_size=64, seed=1, epochs=1, steps=5, init_scale=1.0
    )
    assert default == explicit


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_init_scale_must_be_a_positive_finite_number(bad):
    with pytest.raises(ValueError, match="init_scale must be a finite number > 0"):
        training.train_mlp(norm="none", batch_size=64, seed=0, epochs=1, init_scale=bad)


def test_on_step_sees_every_step_after_its_update_with_the_loss_and_the_batch():
    seen = []

    def on_step(step, model, loss, x, y):
        seen.append((step, loss, x.shape, y.shape))

    numbers = training.train_mlp(
        norm="batch", batch_size=32, seed=0, epochs=1, steps=50, on_step=on_step
    )
    assert [step for step, *_ in seen] == list(range(1, 51))
    assert all((x_shape, y_shape) == ((32, 64), (32,)) for _, _, x_shape, y_shape in seen)
    steps_per_epoch = 1347 // 32  # the loss of the last (partial) epoch is its mean
    last_epoch = [loss for _, loss, *_ in seen[steps_per_epoch:]]
    assert numbers["final_train_loss"] == pytest.approx(np.mean(last_epoch))


def test_running_statistics_kept_leaves_every_batchnorm_as_it_was():
    model = nn.MLP(64, 16, 10, norm="batch", rng=0)
    rng = np.random.default_rng(0)
    model(rng.normal(size=(8, 64)).astype(np.float32))  # one training step's statistics
    norms = training.batchnorm_layers(model)
    before = [(n.running_mean.copy(), n.running_var.copy(), n.num_batches_tracked) for n in norms]
    with training.running_statistics_kept(model):
        model.train()
        model(rng.normal(3.0, 2.0, size=(8, 64)).astype(np.float32))
        assert not np.array_equal(norms[0].running_mean, before[0][0])  # it did change inside
    for layer, (mean, var, count) in zip(norms, before, strict=True):
        np.testing.assert_array_equal(layer.running_mean, mean)
        np.testing.assert_array_equal(layer.running_var, var)
        assert layer.num_batches_tracked == count
