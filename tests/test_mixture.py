"""The log-linear mixture of network and table: fitting finds the weights that made
the data, and the mixed distribution is a proper one."""
import numpy as np
import pytest

from trainer import mixture
from trainer.ngram import BUCKETS


def draw(rng, rows: int, vocab: int, weights: np.ndarray, bucket: np.ndarray):
    """Two random experts and symbols drawn from their product with known powers."""
    net_logp = np.log(rng.dirichlet(np.full(vocab, 0.3), rows)).astype(np.float32)
    table_p = rng.dirichlet(np.full(vocab, 0.3), rows).astype(np.float32) + 1e-6
    lw = mixture.log_weights(net_logp.astype(np.float64), table_p.astype(np.float64), weights, bucket)
    p = np.exp(lw - lw.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    targets = (p.cumsum(axis=1) < rng.random((rows, 1))).sum(axis=1).clip(0, vocab - 1)
    return net_logp, table_p, targets


def test_fit_recovers_the_weights_that_made_the_data():
    rng = np.random.default_rng(0)
    true = np.tile([0.5, 0.5], (BUCKETS, 1))
    true[3], true[BUCKETS - 1] = [0.9, 0.2], [0.3, 1.1]
    bucket = rng.choice([3, BUCKETS - 1], 8000)
    bucket[:100] = 5  # too rare to be fitted alone: it gets the overall pair
    net_logp, table_p, targets = draw(rng, len(bucket), 40, true, bucket)
    fitted = np.array(mixture.fit(net_logp, table_p, targets, bucket))
    np.testing.assert_allclose(fitted[3], true[3], atol=0.08)
    np.testing.assert_allclose(fitted[BUCKETS - 1], true[BUCKETS - 1], atol=0.08)
    assert np.all(fitted[5] == fitted[0])  # neither bucket had enough rows
    # the fitted mixture predicts its data better than either expert alone
    mixed = mixture.log_probs(net_logp, table_p, fitted, bucket, targets).mean()
    rows = np.arange(len(targets))
    assert mixed > net_logp[rows, targets].mean() and mixed > np.log(table_p[rows, targets]).mean()


def test_log_probs_are_normalized():
    rng = np.random.default_rng(1)
    weights = rng.uniform(0, 1.5, (BUCKETS, 2))
    bucket = rng.integers(0, BUCKETS, 50)
    net_logp, table_p, _ = draw(rng, 50, 30, weights, bucket)
    total = np.zeros(50)
    for symbol in range(30):
        total += np.exp(mixture.log_probs(net_logp, table_p, weights, bucket, np.full(50, symbol)))
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


@pytest.mark.parametrize("added, base_table", [(0, False), (3, False), (3, True)])
def test_the_sampler_draws_from_the_distribution_that_is_scored(added, base_table):
    """sample.Mixer works from raw logits and folds the temperature into the powers;
    at temperature 1 it must give exactly the mixture that evaluation scores, with or
    without the account's own characters (the vocabulary's last `added`), and with
    the table counted on them or at the base vocabulary."""
    from trainer import data, ngram
    from trainer.data import Post, Vocab
    from trainer.model import Artifact, ModelConfig
    from trainer.sample import Mixer

    vocab = Vocab(list("abcdefghijklmnopqrstuvwxyz "))
    encoded = data.encode_posts(vocab, [Post(str(i), None, t) for i, t in
                                        enumerate(["we will win", "we are here", "win it", "here we go"] * 5)])
    table_size = len(vocab) - (added if base_table else 0)
    encoded = [ngram.fold(e, table_size) for e in encoded]
    table = ngram.NGram.fit(encoded, table_size)
    rng = np.random.default_rng(2)
    weights = rng.uniform(0.2, 1.2, (BUCKETS, 2))
    art = Artifact(ModelConfig(), vocab, [], {"mixture_weights": weights.tolist(), "vocab_added": added}, table)
    contexts = ngram.contexts(encoded[:3])
    logits = rng.normal(0, 3, (len(contexts), len(vocab))).astype(np.float32)
    got = Mixer(art, temperature=1.0)(logits.copy(), contexts, forbidden=[])
    got /= got.sum(axis=1, keepdims=True)
    net_logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    table_p, bucket = table.distributions(contexts)
    for symbol in range(len(vocab)):
        want = np.exp(mixture.log_probs(net_logp, table_p, weights, bucket, np.full(len(contexts), symbol), added))
        np.testing.assert_allclose(got[:, symbol], want, rtol=1e-4, atol=1e-7)


def _merged(net_logp, table_p, cls, base):
    """The two experts over the first `base` symbols, the class `cls` as UNK's column."""
    from trainer.data import UNK

    net_m, table_m = net_logp[:, :base].copy(), table_p[:, :base].copy()
    net_m[:, UNK] = np.log(np.exp(net_logp[:, cls].astype(np.float64)).sum(axis=1))
    table_m[:, UNK] = table_p[:, cls].sum(axis=1)
    return net_m, table_m


def test_own_characters_share_unks_class_as_the_product_gives_it():
    """With `added` symbols in UNK's class, the class as a whole gets what the
    product of the two experts' class totals gives it (as before they were added),
    every other symbol keeps its ratio to the rest, and the row is normalized."""
    from trainer.data import UNK

    rng = np.random.default_rng(3)
    vocab, added, rows = 30, 4, 60
    weights = rng.uniform(0.3, 1.5, (BUCKETS, 2))
    bucket = rng.integers(0, BUCKETS, rows)
    net_logp, table_p, _ = draw(rng, rows, vocab, weights, bucket)
    cls = mixture.unk_class(vocab, added)
    assert list(cls) == [UNK, 26, 27, 28, 29]

    def probs(lw):
        p = np.exp(lw - lw.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    grown = probs(mixture.log_weights(net_logp.astype(np.float64), table_p.astype(np.float64), weights, bucket, added))
    base = vocab - added
    net_m, table_m = _merged(net_logp.astype(np.float64), table_p.astype(np.float64), cls, base)
    merged = probs(mixture.log_weights(net_m, table_m, weights, bucket))
    np.testing.assert_allclose(grown.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(grown[:, cls].sum(axis=1), merged[:, UNK], rtol=1e-6)
    others = [s for s in range(base) if s != UNK]
    np.testing.assert_allclose(grown[:, others], merged[:, others], rtol=1e-6)
    # and the plain product (no class) gives the class less wherever both experts spread it
    plain = probs(mixture.log_weights(net_logp.astype(np.float64), table_p.astype(np.float64), weights, bucket))
    assert np.mean(plain[:, cls].sum(axis=1) < grown[:, cls].sum(axis=1) + 1e-12) > 0.5


def test_fit_with_own_characters_is_the_fit_of_the_merged_class():
    from trainer.data import UNK

    rng = np.random.default_rng(4)
    vocab, added = 24, 3
    true = np.tile([0.7, 0.6], (BUCKETS, 1))
    bucket = np.full(6000, 3)
    net_logp, table_p, targets = draw(rng, len(bucket), vocab, true, bucket)
    base = vocab - added
    net_m, table_m = _merged(net_logp, table_p, mixture.unk_class(vocab, added), base)
    merged_targets = np.where(targets >= base, UNK, targets)
    assert (targets >= base).sum() > 50  # the class is really used
    np.testing.assert_allclose(mixture.fit(net_logp, table_p, targets, bucket, added),
                               mixture.fit(net_m, table_m, merged_targets, bucket), atol=1e-3)


def test_a_table_at_the_base_vocabulary_gives_the_class_and_the_network_splits_it():
    """A table counted with the account's characters as UNK (ngram.fold) has one
    column for the class: the class gets what the product of the two class totals
    gives it, as with a table that split it, and its members share that at the
    network's own odds."""
    rng = np.random.default_rng(5)
    vocab, added, rows = 30, 4, 60
    base = vocab - added
    weights = rng.uniform(0.3, 1.5, (BUCKETS, 2))
    bucket = rng.integers(0, BUCKETS, rows)
    net_logp, table_p, _ = draw(rng, rows, vocab, weights, bucket)
    net_logp, table_p = net_logp.astype(np.float64), table_p.astype(np.float64)
    cls = mixture.unk_class(vocab, added)
    _, narrow = _merged(net_logp, table_p, cls, base)
    lw = mixture.log_weights(net_logp, narrow, weights, bucket, added)
    p = np.exp(lw - lw.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    wide = mixture.log_weights(net_logp, table_p, weights, bucket, added)
    q = np.exp(wide - wide.max(axis=1, keepdims=True))
    q /= q.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(p[:, cls].sum(axis=1), q[:, cls].sum(axis=1), rtol=1e-6)
    others = [s for s in range(base) if s not in cls]
    np.testing.assert_allclose(p[:, others], q[:, others], rtol=1e-6)
    split = np.exp(net_logp[:, cls])  # the network's own odds, not raised to its power
    np.testing.assert_allclose(p[:, cls] / p[:, cls].sum(axis=1, keepdims=True),
                               split / split.sum(axis=1, keepdims=True), rtol=1e-6)
    # the fit reads the narrow table's class as the wide table's class total
    targets = rng.integers(0, vocab, rows * 50)
    many = np.repeat(np.arange(rows), 50)
    np.testing.assert_allclose(mixture.fit(net_logp[many], narrow[many], targets, bucket[many], added),
                               mixture.fit(net_logp[many], table_p[many], targets, bucket[many], added), atol=1e-3)
