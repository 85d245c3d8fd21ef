"""Decoding that spells only real words: while a candidate is inside a word, the
sampler may write only letters that keep it the start of an allowed word, and may end
the word only where it is a whole allowed word.

Why constrain rather than reject afterwards (what the bot did before): a long candidate
is likelier to hold one invented word, so rejection kept the short, plain ones, and
the posts came out shorter and made of commoner words than the account's
(BENCHMARKS.md, "What the bot posts"). Steering each word keeps every candidate.

What a word is mirrors trainer.words.words (the filter's own definition, which still
checks the result): letters, with apostrophes inside, casefolded. @handles and #tags
are free (the content checks judge them), as are numbers. The allowed words are a
sorted tuple, and a prefix's possible next letters are found by bisection: a trie of
the base list's 105,000 words in Python dicts takes 47 MB (tracemalloc), per account.
"""
from __future__ import annotations

import bisect
from typing import Iterable

import numpy as np

from trainer.data import SPECIALS, Vocab

_APOSTROPHES = "'\u2019"
_TAG_MARKS = "@#\uff20\uff03"
_ZERO_WIDTH = "\u200b\u200c\u2060\ufeff"
_LAST = "\U0010ffff"

# what each symbol is to the word rule
LETTER, APOSTROPHE, TAG_MARK, TAG_CHAR, OTHER = range(5)
# a row's state: (mode, prefix); mode OUT = between words, IN = in a word (prefix: its
# casefolded letters so far, an apostrophe last if one was just written), FREE = in a
# handle or tag
OUT, IN, FREE = range(3)
START = (OUT, "")


def _is_letter(ch: str) -> bool:
    # the class [^\W\d_] of trainer.words: word characters but digits and "_"
    return ch.isalnum() and not ch.isdecimal()


class Speller:
    """The allowed words over one vocabulary: which symbols may come next in a state,
    and the state after a symbol."""

    def __init__(self, vocab: Vocab, allowed: Iterable[str]):
        self.words = tuple(sorted(set(allowed)))
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
            elif ch in _TAG_MARKS:
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

    # --- the word list ---------------------------------------------------------------

    def is_word(self, prefix: str) -> bool:
        i = bisect.bisect_left(self.words, prefix)
        return i < len(self.words) and self.words[i] == prefix

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

    def _is_prefix(self, prefix: str) -> bool:
        i = bisect.bisect_left(self.words, prefix)
        return i < len(self.words) and self.words[i].startswith(prefix)

    # --- per state ---------------------------------------------------------------------

    def allowed(self, state: tuple[int, str]) -> np.ndarray | None:
        """A boolean mask over the vocabulary of what may come next; None: anything."""
        mode, prefix = state
        if mode != IN:
            return None
        mask = self._masks.get(prefix)
        if mask is None:
            mask = self._masks[prefix] = self._mask(prefix)
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
            if len(ch) > 1 and self._is_prefix(prefix + ch):
                mask[ids] = True
        return mask

    def after(self, state: tuple[int, str], symbol: int) -> tuple[int, str]:
        mode, prefix = state
        kind = self.kinds[symbol]
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
            return FREE, ""
        return START

    def run(self, ids: Iterable[int]) -> tuple[int, str]:
        """The state after `ids` from a post's start (a prime)."""
        state = START
        for i in ids:
            state = self.after(state, int(i))
        return state
