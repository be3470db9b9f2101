"""Choosing settings without the validation text, evaluating in train mode, recording BatchNorm.

* :func:`normlab.data.load_tuning_corpus` cuts tuning text out of the training split only;
* ``train_language_model(held_out="tuning")`` trains and measures there;
* ``evaluate_language_model(batch_statistics_of=B)`` normalizes each group of B windows by
  its own BatchNorm statistics and leaves the model as it was;
* :func:`normlab.instruments.record_batch_statistics` records what each running-statistics
  step moves towards, without changing a number the model computes.
"""

from __future__ import annotations

import numpy as np
import pytest

from normlab import data, nn, training
from normlab.instruments import record_batch_statistics


def test_tuning_text_comes_from_the_training_split_only():
    corpus, tuning = data.load_char_corpus(), data.load_tuning_corpus()
    assert np.array_equal(
        np.sort(np.concatenate([tuning.train, tuning.validation])), np.sort(corpus.train)
    )
    assert 0.05 < len(tuning.validation) / len(corpus.train) < 0.15
    assert tuning.vocabulary == corpus.vocabulary
    window = corpus.validation[:64]  # validation text is never part of the tuning corpus
    text = tuning.train.tobytes() + tuning.validation.tobytes()
    assert window.tobytes() not in text


def tiny_setup(**options) -> tuple[nn.TransformerLMConfig, training.LMTrainingSetup]:
    corpus = data.load_char_corpus()
    architecture = nn.TransformerLMConfig(
        vocab_size=corpus.vocab_size,
        context_length=8,
        d_model=8,
        num_heads=2,
        num_layers=1,
        dim_feedforward=16,
        **options,
    )
    setup = training.LMTrainingSetup(
        steps=4, batch_size=4, context_length=8, warmup_steps=1, eval_every=2, eval_windows=8
    )
    return architecture, setup


def test_training_can_measure_on_the_tuning_text_instead_of_the_validation_text():
    architecture, setup = tiny_setup()
    tuned = training.train_language_model(architecture, setup, seed=0, held_out="tuning")
    reported = training.train_language_model(architecture, setup, seed=0)
    assert tuned["held_out"] == "tuning" and reported["held_out"] == "validation"
    assert tuned["unigram_baseline"] == pytest.approx(data.load_tuning_corpus().unigram_baseline())
    assert tuned["validation_loss"][0] != reported["validation_loss"][0]  # other text
    with pytest.raises(ValueError, match="held_out must be one of"):
        training.train_language_model(architecture, setup, seed=0, held_out="test")


def test_train_mode_evaluation_uses_batch_statistics_and_restores_the_running_ones():
    architecture, setup = tiny_setup(norm="batch")
    _, model = training.train_language_model(architecture, setup, seed=0, return_model=True)
    layers = training.batchnorm_layers(model)
    before = [(layer.running_mean.copy(), layer.num_batches_tracked) for layer in layers]
    validation = data.load_char_corpus().validation
    eval_mode = training.evaluate_language_model(model, validation, 8, 16)
    train_mode = training.evaluate_language_model(model, validation, 8, 16, batch_statistics_of=4)
    assert train_mode != eval_mode
    for layer, (mean, batches) in zip(layers, before, strict=True):
        assert np.array_equal(layer.running_mean, mean) and layer.num_batches_tracked == batches
    architecture, _ = tiny_setup(norm="layer")
    _, model = training.train_language_model(architecture, setup, seed=0, return_model=True)
    assert training.evaluate_language_model(model, validation, 8, 16) == pytest.approx(
        training.evaluate_language_model(model, validation, 8, 16, batch_statistics_of=4),
        rel=1e-6,
    )


def test_recorded_statistics_are_the_batch_statistics_and_the_running_ones_before_the_step(rng):
    model = nn.MLP(4, 6, 3, norm="batch", rng=0, dtype=np.float64)
    x = rng.normal(2.0, 3.0, size=(10, 4))
    first_layer = training.batchnorm_layers(model)[0]
    hidden = model[0](x)  # the first BatchNorm's input
    reference = model(x)  # one step, unrecorded
    with record_batch_statistics(model) as records:
        running_before = first_layer.running_mean.copy()
        recorded = model(x)
    np.testing.assert_array_equal(recorded, reference)
    (record,) = records[0]
    np.testing.assert_allclose(record.batch_mean, hidden.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(record.batch_var, hidden.var(axis=0, ddof=1), rtol=1e-12)
    np.testing.assert_array_equal(record.running_mean, running_before)
    assert record.count == 10 and len(records) == 2
    model(x)  # after the block: nothing recorded, the class's method again
    assert len(records[0]) == 1 and "_update_running_stats" not in vars(first_layer)


def test_recording_refuses_per_position_statistics():
    model = nn.SequenceModel(2, 4, 2, rng=0, norm="batch", norm_kwargs={"max_positions": 3})
    with pytest.raises(ValueError, match="one per position"), record_batch_statistics(model):
        pass
