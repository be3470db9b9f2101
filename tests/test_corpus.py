"""The character corpus from ``pydoc_data.topics``: split, vocabulary, batches, fingerprint."""

from __future__ import annotations

import hashlib
import platform
from collections import Counter

import numpy as np
import pytest

from normlab import data


@pytest.fixture(scope="module")
def corpus() -> data.CharCorpus:
    return data.load_char_corpus()


def test_corpus_is_the_whole_text_in_contiguous_blocks(corpus):
    text = data.corpus_text()
    assert len(text) > 400_000  # it ships with every CPython; sizes differ between versions
    assert corpus.vocabulary == "".join(sorted(set(text)))
    ids = corpus.encode(text)
    blocks = [ids[start : start + 4096] for start in range(0, len(ids), 4096)]
    np.testing.assert_array_equal(corpus.validation, np.concatenate(blocks[9::10]))
    np.testing.assert_array_equal(
        corpus.train, np.concatenate([block for i, block in enumerate(blocks) if i % 10 != 9])
    )
    assert corpus.decode(corpus.validation[:20]) == text[9 * 4096 : 9 * 4096 + 20]


def test_corpus_is_cached_read_only_and_other_splits_can_be_asked_for(corpus):
    assert data.load_char_corpus() is corpus
    with pytest.raises(ValueError, match="read-only"):
        corpus.train[0] = 0
    coarse = data.load_char_corpus(block_length=1000, validation_every=4)
    assert len(coarse.train) + len(coarse.validation) == len(corpus.train) + len(corpus.validation)
    assert 0.24 < len(coarse.validation) / (len(coarse.train) + len(coarse.validation)) < 0.26
    with pytest.raises(ValueError, match="validation_every must be an integer >= 2"):
        data.load_char_corpus(validation_every=1)


def test_fingerprint_names_the_python_version_and_the_texts_hash(corpus):
    fingerprint = data.corpus_fingerprint()
    assert fingerprint["python_version"] == platform.python_version()
    digest = hashlib.sha256(data.corpus_text().encode("utf-8")).hexdigest()
    assert fingerprint["sha256"] == digest
    assert corpus.fingerprint == fingerprint
    assert fingerprint["source"] == "pydoc_data.topics"


def test_encode_decode_round_trip_and_unknown_characters(corpus):
    sample = 'for x in range(3):\n    print("x =", x)'
    assert corpus.decode(corpus.encode(sample)) == sample
    with pytest.raises(ValueError, match=r"not in the vocabulary: \['☃'\]"):
        corpus.encode("snow ☃")


def test_unigram_baseline_is_the_smoothed_train_frequencies_on_validation(corpus):
    counts = Counter(corpus.train.tolist())
    total = len(corpus.train) + corpus.vocab_size
    expected = -np.mean([np.log((counts[i] + 1) / total) for i in corpus.validation.tolist()])
    assert corpus.unigram_baseline() == pytest.approx(expected, rel=1e-12)
    assert 2.5 < corpus.unigram_baseline() < np.log(corpus.vocab_size)


def test_sample_windows_are_text_followed_by_its_next_characters(corpus):
    inputs, targets = data.sample_windows(corpus.train, 8, 16, rng=0)
    assert inputs.shape == targets.shape == (8, 16) and inputs.dtype == np.int64
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    train_text = corpus.decode(corpus.train)
    for row in range(8):
        window = corpus.decode(inputs[row]) + corpus.decode(targets[row, -1:])
        assert window in train_text
    again, _ = data.sample_windows(corpus.train, 8, 16, rng=0)
    np.testing.assert_array_equal(again, inputs)


def test_evaluation_windows_cover_the_split_in_order(corpus):
    inputs, targets = data.evaluation_windows(corpus.validation, 64)
    assert len(inputs) == (len(corpus.validation) - 1) // 64
    np.testing.assert_array_equal(inputs.reshape(-1), corpus.validation[: inputs.size])
    np.testing.assert_array_equal(targets.reshape(-1), corpus.validation[1 : inputs.size + 1])
    first, _ = data.evaluation_windows(corpus.validation, 64, max_windows=5)
    np.testing.assert_array_equal(first, inputs[:5])


def test_bucketing_groups_the_same_sequences_with_less_padding(corpus):
    arguments = (corpus.train, 6, 8, 2, 40)
    mixed = data.length_batches(*arguments, rng=1, bucketed=False)
    bucketed = data.length_batches(*arguments, rng=1, bucketed=True)

    def sequences(batches):
        return sorted(
            tuple(batch.ids[row, : batch.lengths[row]].tolist())
            for batch in batches
            for row in range(len(batch))
        )

    assert sequences(mixed) == sequences(bucketed)
    assert np.mean([b.padding_fraction for b in bucketed]) < np.mean(
        [b.padding_fraction for b in mixed]
    )
    for batch in mixed + bucketed:
        assert batch.ids.shape[1] == batch.lengths.max()
        np.testing.assert_array_equal(batch.mask.sum(axis=1), batch.lengths)
        real = batch.mask[:, 1:]
        np.testing.assert_array_equal(batch.ids[:, 1:][real], batch.targets[:, :-1][real])
        assert not batch.ids[~batch.mask].any() and not batch.targets[~batch.mask].any()


def test_padded_batch_has_one_window_of_each_length(corpus):
    batch = data.padded_batch(corpus.train, [3, 7, 1], rng=0)
    assert batch.ids.shape == (3, 7)
    np.testing.assert_array_equal(batch.mask.sum(axis=1), [3, 7, 1])
    assert batch.padding_fraction == pytest.approx(1 - 11 / 21)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda ids: data.sample_windows(ids, 2, 10, rng=0), r"length \+ 1 = 11 ids.*has 10"),
        (lambda ids: data.evaluation_windows(ids, 0), "length must be an integer >= 1"),
        (lambda ids: data.padded_batch(ids, [], rng=0), "non-empty"),
        (lambda ids: data.length_batches(ids, 2, 2, 5, 3, 0, bucketed=True), "max_length"),
    ],
)
def test_batches_reject_bad_arguments(call, words):
    with pytest.raises(ValueError, match=words):
        call(np.arange(10))
