"""The batched stateful sampler."""
import numpy as np
import pytest

from trainer import model
from trainer.data import EOS, PAD, UNK, Post, Vocab
from trainer.model import Artifact, ModelConfig
from trainer.evaluate import post_bits, symbol_log_probs
from trainer.sample import StepNet, sample, sample_scored
from trainer.text import URL_SYMBOL
from trainer.text import MAX_WEIGHTED_LENGTH, weighted_length


def random_artifact(cell, vocab=None, seed=0):
    cfg = ModelConfig(cell=cell, layers=2, units=24, embedding=8)
    vocab = vocab or Vocab(list("abcdefgh \ue000中"))
    keras_model = model.build_model(cfg, len(vocab))
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in keras_model.get_weights()]
    return Artifact(cfg, vocab, weights), keras_model


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_step_by_step_numpy_matches_keras_on_whole_sequences(cell):
    art, keras_model = random_artifact(cell)
    keras_model.set_weights(art.weights)
    x = np.random.default_rng(1).integers(1, len(art.vocab), (4, 9)).astype(np.int32)
    expected = np.asarray(keras_model(x))
    net, state, got = StepNet(art), None, []
    state = net.initial_state(4)
    for t in range(x.shape[1]):
        logits, state = net.step(x[:, t], state)
        got.append(logits)
    np.testing.assert_allclose(np.stack(got, axis=1), expected, atol=1e-4)


def biased(art, **bias):
    """The same network with its output bias pushed towards some symbols."""
    weights = [w.copy() for w in art.weights]
    for sym, b in bias.items():
        idx = EOS if sym == "EOS" else art.vocab.stoi[sym]
        weights[-1][idx] += b
    return Artifact(art.config, art.vocab, weights)


def test_stops_at_end_of_post():
    art, _ = random_artifact("gru")
    art = biased(art, a=8.0, EOS=7.0)  # mostly "a", ending soon
    texts = sample(art, 50, temperature=1.0, top_p=1.0, seed=0)
    assert len(texts) >= 45
    assert all(set(t) <= set(art.vocab.chars) for t in texts)
    assert len({len(t) for t in texts}) > 3  # each post ended on its own, not at a fixed length
    assert max(len(t) for t in texts) < 80


def test_results_keep_within_x_weighted_length():
    art, _ = random_artifact("lstm")
    art = biased(art, **{"中": 9.0, "EOS": 3.5})  # CJK weighs 2: at most 140 of them fit
    texts = sample(art, 100, temperature=1.0, top_p=1.0, seed=3)
    assert texts, "some posts must end in time"
    assert all(weighted_length(t) <= MAX_WEIGHTED_LENGTH for t in texts)
    assert max(len(t) for t in texts) > 100  # long ones are there, up to the limit


def test_never_ending_model_yields_nothing_rather_than_overlong_posts():
    art, _ = random_artifact("gru")
    art = biased(art, EOS=-50.0, **{"\ue000": -50.0})  # a link would end a post too
    assert sample(art, 10, seed=0) == []


def test_a_time_bound_keeps_what_ended_and_changes_nothing_it_does_not_cut():
    art, _ = random_artifact("gru")
    art = biased(art, a=8.0, EOS=7.0)
    free = sample(art, 50, temperature=1.0, top_p=1.0, seed=0)
    assert sample(art, 50, temperature=1.0, top_p=1.0, seed=0, max_seconds=600) == free
    assert sample(art, 50, temperature=1.0, top_p=1.0, seed=0, max_seconds=0) == []  # out of time before a step


def test_prime_starts_every_post_and_a_link_ends_it():
    art, _ = random_artifact("gru")
    # a network that never ends a post but where it would write a link ends it there,
    # and no link is posted
    linking = biased(art, **{"\ue000": 1.0, "EOS": -50.0})
    texts = sample(linking, 30, prime="abc ", top_p=1.0, temperature=1.0, seed=0)
    assert len(texts) == 30 and all(t.startswith("abc ") and len(t) > 4 for t in texts)
    assert not any("\ue000" in t for t in texts)


def test_top_k_one_is_greedy_and_deterministic():
    art, _ = random_artifact("gru", seed=5)
    a = sample(art, 8, top_k=1, top_p=1.0, seed=1)
    b = sample(art, 8, top_k=1, top_p=1.0, seed=2)
    assert a == b and len(set(a)) <= 1


def test_bad_sampling_settings():
    from trainer.errors import TrainerError

    art, _ = random_artifact("gru")
    with pytest.raises(TrainerError):
        sample(art, 1, temperature=0)
    with pytest.raises(TrainerError):
        sample(art, 1, top_p=1.5)


def test_each_post_comes_with_its_bits_per_character_as_the_model_scores_it():
    # no space: a post is returned stripped, and the figure is of what was sampled
    art, _ = random_artifact("gru", Vocab(list("abcdefgh\ue000中")), seed=4)
    # the sampler never draws PAD, UNK or a link: the scorer must give them nothing either
    for sym in (PAD, UNK, art.vocab.stoi[URL_SYMBOL]):
        art.weights[-1][sym] -= 30.0
    got = sample_scored(art, 40, temperature=1.0, top_p=1.0, seed=2)
    assert len(got) >= 30 and len({round(b, 3) for _, b in got}) > 20
    posts = [Post(str(i), None, t) for i, (t, _) in enumerate(got)]
    expected = post_bits(symbol_log_probs(art, posts), [np.asarray(art.vocab.encode(p.text)) for p in posts])
    np.testing.assert_allclose([b for _, b in got], expected, rtol=1e-3)
    # a nucleus cut changes what is drawn, not how the model scores it
    cut = sample_scored(art, 40, temperature=1.0, top_p=0.5, seed=2)
    posts = [Post(str(i), None, t) for i, (t, _) in enumerate(cut)]
    expected = post_bits(symbol_log_probs(art, posts), [np.asarray(art.vocab.encode(p.text)) for p in posts])
    np.testing.assert_allclose([b for _, b in cut], expected, rtol=1e-3)
    assert np.mean(expected) < np.mean([b for _, b in got])  # and the cut draws likelier text
