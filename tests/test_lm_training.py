"""Adam, AdamW and the warm-up schedule (against torch), and the language-model training loop.

The last test is the fast version of the demonstration: a tiny transformer trained for a few
hundred steps on the corpus must beat the unigram baseline on validation text by a margin.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from normlab import data, nn, training
from normlab.nn.optim import WarmupSchedule


def tiny_config(**options) -> nn.TransformerLMConfig:
    sizes = {"d_model": 32, "num_heads": 2, "num_layers": 1, "dim_feedforward": 64}
    return nn.TransformerLMConfig(
        vocab_size=data.load_char_corpus().vocab_size, context_length=32, **{**sizes, **options}
    )


# ---------------------------------------------------------------------------
# The schedule and the optimizers
# ---------------------------------------------------------------------------


def test_warmup_rises_linearly_then_follows_its_decay():
    constant = WarmupSchedule(0.1, warmup_steps=10)
    assert [constant.lr_at(step) for step in (1, 5, 10, 11, 10_000)] == pytest.approx(
        [0.01, 0.05, 0.1, 0.1, 0.1]
    )
    cosine = WarmupSchedule(0.1, warmup_steps=10, total_steps=110, decay="cosine", min_lr=0.01)
    assert cosine.lr_at(60) == pytest.approx(0.01 + 0.09 * 0.5)  # half-way: cos(π/2) = 0
    assert cosine.lr_at(110) == pytest.approx(0.01) and cosine.lr_at(500) == pytest.approx(0.01)
    linear = WarmupSchedule(0.1, warmup_steps=0, total_steps=100, decay="linear")
    assert linear.lr_at(1) == pytest.approx(0.1 * 0.99) and linear.lr_at(50) == pytest.approx(0.05)
    rates = [cosine.lr_at(step) for step in range(11, 111)]
    assert all(later <= earlier for earlier, later in itertools.pairwise(rates))


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"base_lr": 0.0}, "base_lr must be > 0"),
        ({"base_lr": 0.1, "warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        ({"base_lr": 0.1, "decay": "cosine"}, r"needs total_steps > warmup_steps=0"),
        ({"base_lr": 0.1, "decay": "step"}, "decay must be one of"),
        ({"base_lr": 0.1, "min_lr": 0.2}, r"min_lr must be in \[0, base_lr=0.1\]"),
    ],
)
def test_warmup_schedule_rejects_bad_arguments(arguments, words):
    with pytest.raises(ValueError, match=words):
        WarmupSchedule(**arguments)
    with pytest.raises(ValueError, match="step must be an integer >= 1"):
        WarmupSchedule(0.1).lr_at(0)


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_adam_and_adamw_with_warmup_match_torch_over_several_steps(kind, torch):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3))
    gradients = [rng.normal(size=(4, 3)) for _ in range(8)]
    schedule = WarmupSchedule(0.05, warmup_steps=3, total_steps=8, decay="cosine")
    params, grads = {"w": start.copy()}, {}
    param_torch = torch.nn.Parameter(torch.tensor(start))
    options = {"betas": (0.85, 0.98), "eps": 1e-7, "weight_decay": 0.1}
    if kind == "adam":
        optimizer = nn.Adam(params, grads, lr=0.05, **options)
        optimizer_torch = torch.optim.Adam([param_torch], lr=0.05, **options)
    else:
        optimizer = nn.AdamW(params, grads, lr=0.05, **options)
        optimizer_torch = torch.optim.AdamW([param_torch], lr=0.05, **options)
    for step, gradient in enumerate(gradients, start=1):
        grads["w"] = gradient
        optimizer.lr = schedule.lr_at(step)
        optimizer.step()
        param_torch.grad = torch.tensor(gradient)
        optimizer_torch.param_groups[0]["lr"] = schedule.lr_at(step)
        optimizer_torch.step()
        np.testing.assert_allclose(params["w"], param_torch.detach().numpy(), rtol=1e-13)


def test_adamw_decays_weights_without_gradient_and_adam_l2_does_not_the_same_way():
    params, grads = {"w": np.full(3, 2.0)}, {"w": np.zeros(3)}
    nn.AdamW(params, grads, lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(params["w"], 2.0 * (1 - 0.1 * 0.5))  # Adam's own step is 0


# ---------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------


def test_training_setup_checks_its_fields():
    with pytest.raises(ValueError, match=r"training\.steps must be an integer ≥ 1"):
        training.LMTrainingSetup(steps=0)
    with pytest.raises(ValueError, match=r"training\.optimizer must be one of"):
        training.LMTrainingSetup(optimizer="sgd")
    with pytest.raises(ValueError, match="warmup_steps"):
        training.LMTrainingSetup(warmup_steps=-5)


def test_training_loop_is_deterministic_reports_its_curve_and_calls_back():
    setup = training.LMTrainingSetup(
        steps=6, batch_size=4, context_length=16, warmup_steps=2, eval_every=4, eval_windows=8
    )
    seen = []

    def on_step(step, model, loss, inputs, targets):
        seen.append((step, float(np.abs(model.grads["head.weight"]).sum()), loss))

    results = training.train_language_model(tiny_config(), setup, seed=3, on_step=on_step)
    assert results["eval_steps"] == [0, 4, 6]
    assert results["train_loss"][0] is None and len(results["validation_loss"]) == 3
    assert results["learning_rate"][1] == pytest.approx(setup.schedule().lr_at(4))
    assert [step for step, _, _ in seen] == list(range(1, 7))
    assert all(gradient > 0 and math.isfinite(loss) for _, gradient, loss in seen)
    assert results["corpus"] == data.corpus_fingerprint() and not results["diverged"]
    again = training.train_language_model(tiny_config(), setup, seed=3)
    assert again["validation_loss"] == results["validation_loss"]
    other = training.train_language_model(tiny_config(), setup, seed=4)
    assert other["validation_loss"] != results["validation_loss"]


def test_models_that_differ_only_in_their_norm_see_the_same_batches():
    setup = training.LMTrainingSetup(
        steps=3, batch_size=2, context_length=8, eval_every=10, eval_windows=2
    )
    batches = {}
    for norm in ("layer", "rms"):
        batches[norm] = []
        training.train_language_model(
            tiny_config(norm=norm),
            setup,
            seed=0,
            on_step=lambda step, model, loss, inputs, targets, norm=norm: batches[norm].append(
                model.token_embedding.grads["weight"].any(axis=1)  # which ids were in the batch
            ),
        )
    for layer_batch, rms_batch in zip(batches["layer"], batches["rms"], strict=True):
        np.testing.assert_array_equal(layer_batch, rms_batch)


def test_training_loop_rejects_a_model_that_does_not_fit_the_corpus_or_the_windows():
    with pytest.raises(ValueError, match="vocab_size must be the corpus's"):
        training.train_language_model(
            nn.TransformerLMConfig(vocab_size=7, context_length=32), seed=0
        )
    setup = training.LMTrainingSetup(context_length=64)
    with pytest.raises(ValueError, match=r"64 characters.*context_length=32"):
        training.train_language_model(tiny_config(), setup, seed=0)


def test_a_tiny_transformer_beats_the_unigram_baseline_on_validation_text():
    """Refuted if a few hundred steps leave the model no better than character frequencies."""
    setup = training.LMTrainingSetup(
        steps=300,
        batch_size=16,
        context_length=32,
        lr=1e-2,
        warmup_steps=30,
        eval_every=100,
        eval_windows=200,
    )
    results = training.train_language_model(tiny_config(), setup, seed=0)
    losses = results["validation_loss"]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    assert results["final_validation_loss"] < results["unigram_baseline"] - 0.4


def test_a_diverged_run_stops_and_its_results_are_strict_json():
    def poison(step, model, loss, inputs, targets):
        if step == 2:
            model.params["head.bias"][...] = np.nan  # the next forward's loss is NaN

    setup = training.LMTrainingSetup(
        steps=5, batch_size=2, context_length=8, eval_every=4, eval_windows=2
    )
    results = training.train_language_model(tiny_config(), setup, seed=0, on_step=poison)
    assert results["diverged"] and results["steps"] == 2
    assert results["final_validation_loss"] is None and results["eval_steps"] == [0]
    json.dumps(results, allow_nan=False)


@pytest.mark.parametrize("bucketed", [False, True])
def test_variable_length_training_batches_carry_padding_masks(bucketed):
    setup = training.LMTrainingSetup(
        steps=4, batch_size=4, context_length=16, min_length=3, bucketed=bucketed, eval_windows=2
    )
    batches = setup.training_batches(data.load_char_corpus().train, np.random.default_rng(0))
    for _ in range(20):  # more than one pool of batches
        inputs, targets, mask = next(batches)
        assert inputs.shape == targets.shape == mask.shape and mask.shape[1] <= 16
        assert (mask.sum(axis=1) >= 3).all() and mask[:, 0].all()
    results = training.train_language_model(tiny_config(), setup, seed=0)
    assert not results["diverged"] and results["steps"] == 4
    with pytest.raises(ValueError, match=r"min_length must be None or an integer in \[1, "):
        training.LMTrainingSetup(context_length=16, min_length=17)
