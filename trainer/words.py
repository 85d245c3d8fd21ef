"""Which words are real: the words of the base corpus (seen at least MIN_COUNT times)
and of an account's own posts. A character model can spell words nobody uses; the
bot posts only candidates whose every word is known (bot/content.py).

Words are what a reader would look up: handles, #tags, URLs and numbers are not words
(a model may write new ones), and case does not matter. The base corpus's list ships
as `trainer/models/words.txt.gz` (a word, its count and its usual form a line), made by
`python -m trainer words --data FILE`.

A word also has the form people write it in, where most of them write it with a
capital in mid-sentence: "Missouri", "December", "NASA". The sampler spells casefolded
words, so it writes "missouri" as readily as "Missouri"; the content checks give such
a word its usual form (bot/content.py). The list's third column holds the form where
it is not all lowercase.

Seen 3 times in a million posts is real, but not common: "chome", "leed" and "setanta"
are. The sampler spells from the common ones only (COMMON_COUNT, plus the account's
own), so that a word the model starts and cannot finish becomes one people write.
"""
from __future__ import annotations

import collections
import gzip
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from trainer.errors import TrainerError
from trainer.text import LINK_RE, URL_SYMBOL

MIN_COUNT = 3  # seen this often (in the base corpus, or in the account's posts) = a real word
COMMON_COUNT = 50  # seen this often in the base corpus = a word the sampler may spell (14,000 words)
DEFAULT_WORDS = Path(__file__).parent / "models" / "words.txt.gz"
# written with a capital this often in mid-sentence (or this rarely): that is the word's
# form; in the base corpus's casual posts "December", "Tesla" and "Peter" are 84-88%
FORM_SHARE = 0.8
FORM_MIN = 5  # mid-sentence uses needed to tell (the base corpus; an account's own: 3)

# handles (defused ones too: a zero-width character after the sign), tags, URLs; bare
# domains are trainer.text's LINK_RE (what X links)
_NOT_WORDS_RE = re.compile("[@\uff20#][\u200b\u200c\u2060\ufeff]*\\w+(?:['\u2019]s\\b)?|(?:https?://|www\\.)\\S+|"
                           + URL_SYMBOL)
_WORD_RE = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


def words(text: str) -> list[str]:
    """The words of a text, casefolded, in order (apostrophes inside a word kept)."""
    text = _NOT_WORDS_RE.sub(" ", LINK_RE.sub(" ", text))
    return [w.replace("\u2019", "'") for w in _WORD_RE.findall(text.casefold())]


# a word follows a letter, digit, comma or the like: it is inside a sentence, where
# its case is its own and not the sentence's
_MID_SENTENCE_RE = re.compile(r"[\w,;\u2014\u2013-]\s*$")


def written(texts: Iterable[str]) -> collections.Counter:
    """How often each word is written each way in mid-sentence: (casefolded, as written)."""
    counts: collections.Counter = collections.Counter()
    for t in texts:
        t = _NOT_WORDS_RE.sub(" ", LINK_RE.sub(" ", t))
        for m in _WORD_RE.finditer(t):
            if _MID_SENTENCE_RE.search(t, 0, m.start()):
                w = m.group().replace("\u2019", "'")
                counts[w.casefold(), w] += 1
    return counts


def usual_forms(counts: collections.Counter, min_count: int = FORM_MIN) -> dict[str, str]:
    """Each word's usual form (`written` counts) where it has at least `min_count`
    mid-sentence uses: the commonest capitalized form ("NASA", not "Nasa") where
    FORM_SHARE of them start with a capital, the word itself where at most
    1 - FORM_SHARE do. A shouted form ("TRUMP", rarer than "Trump") counts for neither."""
    total: collections.Counter = collections.Counter()
    capital: collections.Counter = collections.Counter()
    best: dict[str, tuple[int, str]] = {}
    for (word, form), n in counts.items():
        if form.isupper() and len(form) > 1 and counts[word, form.capitalize()] > n:
            continue  # shouted, where most write it capitalized
        total[word] += n
        if not form[0].islower():
            capital[word] += n
            if n > best.get(word, (0, ""))[0]:
                best[word] = (n, form)
    forms = {}
    for word, n in total.items():
        if n >= min_count:
            if capital[word] >= FORM_SHARE * n:
                forms[word] = best[word][1]
            elif capital[word] <= (1 - FORM_SHARE) * n:
                forms[word] = word
    return forms


def count(texts: Iterable[str]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for t in texts:
        counts.update(words(t))
    return counts


def known(counts: collections.Counter, min_count: int = MIN_COUNT) -> frozenset[str]:
    return frozenset(w for w, c in counts.items() if c >= min_count)


@lru_cache(maxsize=8)
def load(path: str | Path = DEFAULT_WORDS, min_count: int = 0) -> frozenset[str]:
    """The list's words (gzip, "word<TAB>count[<TAB>form]" a line), those seen at
    least `min_count` times; a line without a count is a word seen MIN_COUNT times."""
    counts = _read(path).counts
    return frozenset(w for w, n in counts.items() if n >= min_count)


def load_forms(path: str | Path = DEFAULT_WORDS) -> dict[str, str]:
    """The list's words that have a usual form other than all lowercase, with it."""
    return _read(path).forms


@dataclass(frozen=True)
class _List:  # the parsed file
    counts: dict[str, int]
    forms: dict[str, str]


@lru_cache(maxsize=4)
def _read(path: str | Path) -> _List:
    """The file parsed once: every caller shares the result (read-only)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            counts, forms = {}, {}
            for line in fh:
                word, n, form = (line.rstrip("\n").split("\t") + ["", ""])[:3]
                if word:
                    counts[word] = int(n) if n else MIN_COUNT
                    if form:
                        forms[word] = form
            return _List(counts, forms)
    except FileNotFoundError:
        raise TrainerError(f"{path}: no such file (make it with python -m trainer words --data FILE)") from None
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise TrainerError(f"{path}: not a word list ({exc})") from None


def save(counts: collections.Counter, path: str | Path, min_count: int = MIN_COUNT,
         forms: dict[str, str] | None = None) -> int:
    """Writes the words seen at least `min_count` times, with their counts and the
    usual forms (`usual_forms`) that are not all lowercase."""
    ordered = sorted(w for w, c in counts.items() if c >= min_count)
    forms = {w: f for w, f in (forms or {}).items() if f != w}
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write("".join(f"{w}\t{counts[w]}" + (f"\t{forms[w]}" if w in forms else "") + "\n"
                         for w in ordered).encode("utf-8"))
    return len(ordered)
