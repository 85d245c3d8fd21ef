"""Decoding that spells only real words: while a candidate is inside a word, the
sampler may write only letters that keep it the start of an allowed word, and may end
the word only where it is a whole allowed word.

Why constrain rather than reject afterwards (what the bot did before): a long candidate
is likelier to hold one invented word, so rejection kept the short, plain ones, and
the posts came out shorter and made of commoner words than the account's
(BENCHMARKS.md, "What the bot posts"). Steering each word keeps every candidate.

What a word is mirrors trainer.words.words (the filter's own definition, which still
checks the result): letters, with apostrophes inside, casefolded. Numbers are free,
and so are #tags and @handles unless the speller is given the ones allowed (the
account's own, lowercase): then a #tag or @handle is spelled from those as a word is
from the words, and "#" or "@" is written only where the account has one. The model
invents #tags ("#HearingToog"); rejecting them afterwards left #tags in 2% of
KamalaHarris's posts, against 13% of hers (spelled: 14%). So with @handles: rejected
afterwards, they were in 0.3% of her candidates that passed, against 10% of her posts
(a reply's opening handles aside). Spelled, they are in more candidates than in the
account's posts (8% of elonmusk's, against 1% of his), so how often one is posted is
the choice's to say (bot/compose.py). The allowed words are a
sorted tuple, and a prefix's possible next letters are found by bisection: a trie of
the base list's 105,000 words in Python dicts takes 47 MB (tracemalloc), per account.
"""
from __future__ import annotations

import bisect
from typing import Iterable

import numpy as np

from trainer.data import SPECIALS, Vocab

_APOSTROPHES = "'\u2019"
_ZERO_WIDTH = "\u200b\u200c\u2060\ufeff"
_LAST = "\U0010ffff"

# what each symbol is to the word rule
LETTER, APOSTROPHE, TAG_MARK, TAG_CHAR, OTHER = range(5)
# a row's state: (mode, prefix); mode OUT = between words, IN = in a word (prefix: its
# casefolded letters so far, an apostrophe last if one was just written), FREE = in a
# handle or tag (any), TAG = in a #tag or @handle spelled from the allowed (prefix: its
# mark, "#" or "@", and its characters so far, lowercase)
OUT, IN, FREE, TAG = range(4)
_MARK = {"#": "#", "\uff03": "#", "@": "@", "\uff20": "@"}  # a tag mark as the allowed list writes it
START = (OUT, "")


def _is_letter(ch: str) -> bool:
    # the class [^\W\d_] of trainer.words: word characters but digits and "_"
    return ch.isalnum() and not ch.isdecimal()


class Speller:
    """The allowed words over one vocabulary: which symbols may come next in a state,
    and the state after a symbol."""

    def __init__(self, vocab: Vocab, allowed: Iterable[str], marks: Iterable[str] | None = None):
        self.words = tuple(sorted(set(allowed)))
        self.itos = vocab.itos
        # "#maga", "@cnn" (of `marks`, which may hold other things); None: any may be written
        self.tags = None if marks is None else tuple(sorted({t for t in marks if t[:1] in "#@"}))
        self.size = len(vocab)
        kinds, folded = [], []
        for i, ch in enumerate(vocab.itos):
            if i < len(SPECIALS):
                kinds.append(OTHER)
                folded.append("")
            elif _is_letter(ch):
                kinds.append(LETTER)
                folded.append(ch.casefold())
            elif ch in _APOSTROPHES:
                kinds.append(APOSTROPHE)
                folded.append("'")
            elif ch in _MARK:
                kinds.append(TAG_MARK)
                folded.append("")
            elif ch == "_" or ch.isdecimal() or ch in _ZERO_WIDTH:
                kinds.append(TAG_CHAR)
                folded.append("")
            else:
                kinds.append(OTHER)
                folded.append("")
        self.kinds = np.array(kinds, np.int8)
        self.folded = folded
        self.letters = np.flatnonzero(self.kinds == LETTER)
        # letters by their casefolded form ("S" and "s" both continue "...s")
        self.by_letter: dict[str, list[int]] = {}
        for i in self.letters.tolist():
            self.by_letter.setdefault(folded[i], []).append(i)
        self.enders = self.kinds != LETTER  # what may follow a whole word (EOS included)
        self.enders[self.kinds == APOSTROPHE] = False
        self._masks: dict[str, np.ndarray] = {}
        # a tag's characters are what the content checks' tag pattern takes: [A-Za-z0-9_]
        self.tag_char = {i: ch.lower() for i, ch in enumerate(vocab.itos)
                         if i >= len(SPECIALS) and ch.isascii() and (ch.isalnum() or ch == "_")}
        self.tag_enders = np.ones(self.size, bool)
        self.tag_enders[list(self.tag_char)] = False
        self.tag_enders[[i for i, ch in enumerate(vocab.itos) if ch in _ZERO_WIDTH]] = False
        self._between = None  # between words: no mark of a kind the account never wrote
        written = {t[0] for t in self.tags or ()}
        if self.tags is not None and written != {"#", "@"}:
            self._between = np.array([ch not in _MARK or _MARK[ch] in written for ch in vocab.itos])

    # --- the word list ---------------------------------------------------------------

    def is_word(self, prefix: str) -> bool:
        return _holds(self.words, prefix)

    def _next_letters(self, prefix: str) -> tuple[set[str], bool]:
        """The characters that follow `prefix` in some allowed word, and whether it is
        one itself. One bisection per distinct next character."""
        words, n = self.words, len(prefix)
        lo = bisect.bisect_left(words, prefix)
        hi = bisect.bisect_left(words, prefix + _LAST, lo)
        whole = lo < hi and words[lo] == prefix
        if whole:
            lo += 1
        found = set()
        while lo < hi:
            ch = words[lo][n]
            found.add(ch)
            lo = bisect.bisect_left(words, prefix + chr(ord(ch) + 1), lo, hi)
        return found, whole

    # --- per state ---------------------------------------------------------------------

    def allowed(self, state: tuple[int, str]) -> np.ndarray | None:
        """A boolean mask over the vocabulary of what may come next; None: anything."""
        mode, prefix = state
        if mode == OUT:
            return self._between
        if mode == FREE:
            return None
        mask = self._masks.get(prefix)
        if mask is None:
            mask = self._masks[prefix] = self._tag_mask(prefix) if mode == TAG else self._mask(prefix)
        return mask

    def _tag_mask(self, prefix: str) -> np.ndarray:
        """What may follow an allowed #tag's start: its next characters, and an end
        where it is whole (prefix starts with "#", which no word does)."""
        mask = self.tag_enders.copy() if _holds(self.tags, prefix) else np.zeros(self.size, bool)
        for sym, ch in self.tag_char.items():
            if _starts(self.tags, prefix + ch):
                mask[sym] = True
        return mask

    def _mask(self, prefix: str) -> np.ndarray:
        mask = np.zeros(self.size, bool)
        if prefix.endswith("'"):  # an apostrophe ends the word unless a letter follows
            stem = prefix[:-1]
            nexts, _ = self._next_letters(prefix)
            if self.is_word(stem):
                mask |= self.enders
        else:
            nexts, whole = self._next_letters(prefix)
            if whole:
                mask |= self.enders
            if "'" in nexts or whole:
                mask[self.kinds == APOSTROPHE] = True
        for ch in nexts:
            for i in self.by_letter.get(ch, ()):
                mask[i] = True
        # letters whose casefold is longer than one character ("ß" -> "ss")
        for ch, ids in self.by_letter.items():
            if len(ch) > 1 and _starts(self.words, prefix + ch):
                mask[ids] = True
        return mask

    def after(self, state: tuple[int, str], symbol: int) -> tuple[int, str]:
        mode, prefix = state
        kind = self.kinds[symbol]
        if mode == TAG:
            ch = self.tag_char.get(symbol)
            if ch is not None:
                return TAG, prefix + ch
            mode = OUT
        if mode == FREE:
            if kind == LETTER or kind == TAG_CHAR:
                return state
            mode = OUT
        if mode == IN:
            if kind == LETTER:
                return IN, prefix + self.folded[symbol]
            if kind == APOSTROPHE and not prefix.endswith("'"):
                return IN, prefix + "'"
            mode = OUT
        # between words
        if kind == LETTER:
            return IN, self.folded[symbol]
        if kind == TAG_MARK:
            return (TAG, _MARK[self.itos[symbol]]) if self.tags is not None else (FREE, "")
        return START

    def run(self, ids: Iterable[int]) -> tuple[int, str]:
        """The state after `ids` from a post's start (a prime)."""
        state = START
        for i in ids:
            state = self.after(state, int(i))
        return state


def _holds(ordered: tuple[str, ...], item: str) -> bool:
    """Whether the sorted tuple holds `item`."""
    i = bisect.bisect_left(ordered, item)
    return i < len(ordered) and ordered[i] == item


def _starts(ordered: tuple[str, ...], prefix: str) -> bool:
    """Whether an item of the sorted tuple starts with `prefix`."""
    i = bisect.bisect_left(ordered, prefix)
    return i < len(ordered) and ordered[i].startswith(prefix)
