"""Spelled decoding: what the sampler writes has only allowed words, by the filter's
own definition of a word, and costs little."""
from __future__ import annotations

import numpy as np
import pytest

from bot.compose import ComposeParams, Style, compose
from bot.content import ContentChecks, known_words
from bot.originality import NearCopyIndex
from tests.trainer_helpers import account_posts
from trainer import words
from trainer.data import EOS, Vocab
from trainer.model import load
from trainer.sample import StepNet, sample
from trainer.spelling import Speller

ALLOWED = ["the", "then", "they", "they're", "don't", "voters", "a", "ok", "grosse"]  # casefolded, as trainer.words makes them
VOCAB = Vocab(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ '’@#0123456789_.,!ßö"))


@pytest.fixture(scope="module")
def speller():
    return Speller(VOCAB, ALLOWED)


def may(speller: Speller, text: str) -> set[str] | None:
    """What may follow `text` (a post's start), as characters ("$": the post's end);
    None: anything."""
    mask = speller.allowed(speller.run(VOCAB.encode(text).tolist()))
    if mask is None:
        return None
    return {"$" if i == EOS else VOCAB.itos[i] for i in np.flatnonzero(mask)}


def test_inside_a_word_only_allowed_words_go_on(speller):
    assert may(speller, "Th") == {"e", "E"}
    after_the = may(speller, "THE")
    assert {"n", "N", "y", "Y", " ", ".", "$", "0", "'"} <= after_the and not {"x", "a"} & after_the
    assert may(speller, "the x") == set()  # "x" starts no allowed word: the sampler drops such a row
    assert may(speller, "the ") is None  # between words anything may come


def test_apostrophes_handles_numbers_and_letters_beyond_ascii(speller):
    assert may(speller, "they'") >= {"r", "R", " ", "$"}  # "they're", or "they" and a closing quote
    assert may(speller, "don’") == {"t", "T"}  # "don" is no word: only "don't" goes on
    assert may(speller, "voters'") >= {" ", "$"}  # a plural possessive
    assert may(speller, "@zzq") is None and may(speller, "#zzq9") is None  # tags are free
    assert may(speller, "a 2020") is None  # numbers too
    assert may(speller, "gro") == {"s", "S", "ß"}  # "ß" casefolds to "ss": followed as two letters
    assert may(speller, "GROß") == {"e", "E"}


def test_given_the_allowed_marks_a_hashtag_or_handle_is_spelled_from_them():
    tagged = Speller(VOCAB, ALLOWED, marks={"#maga", "#ma_2", "@cnn", "f9"})  # "f9" is neither
    assert may(tagged, "the #m") == {"a", "A"}
    assert may(tagged, "the #ma") == {"g", "G", "_"}  # "#ma" is no tag: it cannot end here
    after = may(tagged, "#MAGA")
    assert {" ", ".", "$", "'", "ß"} <= after and not {"x", "0", "_"} & after  # ends; "#magax" is no tag
    assert may(tagged, "the #maga th") == {"e", "E"} and may(tagged, "#maga ok ") is None  # words: their own rules
    assert may(tagged, "ok @c") == {"n", "N"} and may(tagged, "ok @CN") == {"n", "N"}
    assert " " in may(tagged, "ok @cnn") and "n" not in may(tagged, "ok @cnn")
    # "#" and "@" only where the account has a #tag or an @handle
    assert may(tagged, "the ") is None
    assert "#" not in may(Speller(VOCAB, ALLOWED, marks={"@cnn"}), "the ")
    assert "@" in may(Speller(VOCAB, ALLOWED, marks={"@cnn"}), "the ")
    assert "@" not in may(Speller(VOCAB, ALLOWED, marks={"#maga"}), "the ")


def test_every_word_written_is_allowed_and_the_cost_is_small(tiny_base_path):
    """The tiny model misspells most posts; spelled, none, with every post kept."""
    tiny = load(tiny_base_path)
    allowed = known_words(words.count(p.text for p in account_posts()))
    net, speller = StepNet(tiny), Speller(tiny.vocab, allowed)
    free = sample(tiny, 200, temperature=1.0, seed=1, net=net)
    spelled = sample(tiny, 200, temperature=1.0, seed=1, net=net, speller=speller)

    def misspelled(texts):
        return sum(any(w not in allowed for w in words.words(t)) for t in texts)

    assert misspelled(free) > 40
    assert misspelled(spelled) == 0 and len(spelled) == 200
    # the words are still the model's: many distinct ones, not a few forced ones
    assert len({w for t in spelled for w in words.words(t)}) > 200


def test_the_bot_posts_real_words_without_rejecting_them(tiny_base_path):
    """compose spells from the content check's own list: no candidate is rejected for
    an unknown word any more, so long candidates are kept as often as short ones."""
    tiny = load(tiny_base_path)
    texts = [p.text for p in account_posts()]
    index = NearCopyIndex()
    index.add_many((p.id, p.text) for p in account_posts())
    checks = ContentChecks(min_words=2, known_words=known_words(words.count(texts)))
    sel = compose(tiny, index, checks, ComposeParams(candidates=96, max_batches=1), seed=5, style=Style.of(texts))
    reasons = [r for v in sel.rejected for r in v.reasons]
    assert sel.passed and not any(r.startswith("unknown-word") for r in reasons)
