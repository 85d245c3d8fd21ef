"""The account's n-gram table: Kneser-Ney against a plain reference, whole
distributions against single scores, and the table inside artifacts and sampling."""
from collections import Counter, defaultdict

import numpy as np
import pytest

from trainer import data, model, ngram
from trainer.data import EOS, Post, Vocab
from trainer.errors import TrainerError
from trainer.model import Artifact, ModelConfig
from trainer.ngram import CONTEXT, ORDER, NGram
from trainer.sample import sample

from tests.trainer_helpers import account_posts


@pytest.fixture(scope="module")
def account():
    posts = list(account_posts())
    vocab = Vocab.build(p.text for p in posts)
    train, heldout = data.chronological_split(posts)
    return vocab, data.encode_posts(vocab, train), data.encode_posts(vocab, heldout)


def reference_probs(train: list[np.ndarray], test: list[np.ndarray], vocab_size: int) -> np.ndarray:
    """Interpolated modified Kneser-Ney written the slow, obvious way (Chen & Goodman 1998)."""
    seqs = lambda enc: [[EOS] * CONTEXT + list(map(int, e)) + [EOS] for e in enc]  # noqa: E731
    counts = [defaultdict(Counter) for _ in range(ORDER + 1)]  # counts[n][context tuple][symbol]
    grams = set()
    for s in seqs(train):
        for i in range(CONTEXT, len(s)):
            counts[ORDER][tuple(s[i - CONTEXT : i])][s[i]] += 1
            grams.add(tuple(s[i - CONTEXT : i + 1]))
    for n in range(ORDER - 1, 0, -1):  # continuation counts: distinct symbols before an n-gram
        for g in grams:
            counts[n][g[1:-1]][g[-1]] += 1
        grams = {g[1:] for g in grams}
    discounts = {}
    for n in range(1, ORDER + 1):
        c = Counter(v for ctx in counts[n].values() for v in ctx.values())
        y = c[1] / (c[1] + 2 * c[2])
        # a negative estimate (few counts of 3 or 4) would add mass: no discount instead
        discounts[n] = tuple(max(0.0, d) for d in (0.0, 1 - 2 * y * c[2] / c[1], 2 - 3 * y * c[3] / c[2], 3 - 4 * y * c[4] / c[3]))
    out = []
    for s in seqs(test):
        for i in range(CONTEXT, len(s)):
            p = 1.0 / vocab_size
            for n in range(1, ORDER + 1):
                ctx = counts[n].get(tuple(s[i - n + 1 : i]) if n > 1 else ())
                if not ctx:
                    break
                d = discounts[n]
                total = sum(ctx.values())
                gamma = sum(d[min(v, 3)] for v in ctx.values()) / total
                seen = ctx.get(s[i], 0)
                p = (seen - d[min(seen, 3)]) / total * (seen > 0) + gamma * p
            out.append(p)
    return np.array(out)


def test_kneser_ney_matches_a_plain_reference(account):
    vocab, train, heldout = account
    table = NGram.fit(train[:300], len(vocab))
    got = table.score(heldout[:40])
    np.testing.assert_allclose(got, reference_probs(train[:300], heldout[:40], len(vocab)), rtol=1e-9)


def test_whole_distributions_sum_to_one_and_agree_with_scores(account):
    vocab, train, heldout = account
    table = NGram.fit(train, len(vocab))
    posts = heldout[:25]
    probs = table.score(posts)
    contexts, targets = [], []
    for e in posts:
        ctx = ngram.start_context([])
        for symbol in [*map(int, e), EOS]:
            contexts.append(ctx)
            targets.append(symbol)
            ctx = ngram.push(np.array([ctx]), np.array([symbol]))[0]
    dist, dist_buckets = table.distributions(np.array(contexts, np.uint64))
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(dist[np.arange(len(targets)), targets], probs, rtol=1e-5)
    np.testing.assert_array_equal(ngram.contexts(posts), contexts)
    np.testing.assert_array_equal(ngram.targets(posts), targets)
    longest = dist_buckets // ngram.KINDS  # symbols of context the table has seen
    assert longest.max() == CONTEXT and (longest < CONTEXT).any() and dist_buckets.max() < ngram.BUCKETS


def test_the_table_knows_the_account_better_than_its_letters(account):
    vocab, train, heldout = account
    probs = NGram.fit(train, len(vocab)).score(heldout)
    bits = -np.log2(probs).mean()
    assert 1.0 < bits < 2.6  # a unigram model of English is about 4.1 bits/char


def test_artifact_round_trip_keeps_the_table(tmp_path, account):
    vocab, train, heldout = account
    cfg = ModelConfig(cell="gru", layers=1, units=8, embedding=4)
    weights = [w.astype(np.float32) for w in model.build_model(cfg, len(vocab)).get_weights()]
    pairs = [[0.5, 0.5]] * ngram.BUCKETS
    art = Artifact(cfg, vocab, weights, {"mixture_weights": pairs}, NGram.fit(train, len(vocab)))
    model.save(art, tmp_path / "m.zip")
    back = model.load(tmp_path / "m.zip")
    assert back.meta["mixture_weights"] == pairs
    np.testing.assert_array_equal(back.ngram.score(heldout[:20]), art.ngram.score(heldout[:20]))
    # a table counted at a smaller vocabulary than the model's says so
    narrow = len(vocab) - 2
    art.ngram = NGram.fit([ngram.fold(e, narrow) for e in train], narrow)
    model.save(art, tmp_path / "narrow.zip")
    assert model.load(tmp_path / "narrow.zip").ngram.vocab_size == narrow
    np.testing.assert_array_equal(art.ngram.fold(np.array([0, narrow - 1, narrow, narrow + 1])),
                                  [0, narrow - 1, data.UNK, data.UNK])
    # an account model from before the log-linear mixture: a clear error, not a wrong mixture
    art.meta["mixture_weights"] = [0.5] * ORDER
    model.save(art, tmp_path / "old.zip")
    with pytest.raises(TrainerError, match="earlier version.*fine-tune"):
        model.load(tmp_path / "old.zip")


def test_sampling_follows_the_table_where_it_has_the_weight():
    vocab = Vocab(list("abcdefghijklmnopqrstuvwxyz \ue000"))
    phrase = "we will win this fight"
    posts = [Post(str(i), None, phrase) for i in range(50)]
    cfg = ModelConfig(cell="gru", layers=1, units=8, embedding=4)
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.build_model(cfg, len(vocab)).get_weights()]
    table = NGram.fit(data.encode_posts(vocab, posts), len(vocab))
    network_only = Artifact(cfg, vocab, weights)
    table_only = Artifact(cfg, vocab, weights, {"mixture_weights": [[0.0, 1.0]] * ngram.BUCKETS}, table)
    assert phrase not in sample(network_only, 20, seed=1, top_p=0.9)
    texts = sample(table_only, 20, seed=1, top_p=0.9)
    assert texts.count(phrase) >= 15
