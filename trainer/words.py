"""Which words are real: the words of the base corpus (seen at least MIN_COUNT times)
and of an account's own posts. A character model can spell words nobody uses; the
bot posts only candidates whose every word is known (bot/content.py).

Words are what a reader would look up: handles, #tags, URLs and numbers are not words
(a model may write new ones), and case does not matter. The base corpus's list ships
as `trainer/models/words.txt.gz` (a word and its count a line), made by
`python -m trainer words --data FILE`.

Seen 3 times in a million posts is real, but not common: "chome", "leed" and "setanta"
are. The sampler spells from the common ones only (COMMON_COUNT, plus the account's
own), so that a word the model starts and cannot finish becomes one people write.
"""
from __future__ import annotations

import collections
import gzip
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from trainer.errors import TrainerError
from trainer.text import LINK_RE, URL_SYMBOL

MIN_COUNT = 3  # seen this often (in the base corpus, or in the account's posts) = a real word
COMMON_COUNT = 50  # seen this often in the base corpus = a word the sampler may spell (14,000 words)
DEFAULT_WORDS = Path(__file__).parent / "models" / "words.txt.gz"

# handles (defused ones too: a zero-width character after the sign), tags, URLs; bare
# domains are trainer.text's LINK_RE (what X links)
_NOT_WORDS_RE = re.compile("[@\uff20#][\u200b\u200c\u2060\ufeff]*\\w+(?:['\u2019]s\\b)?|(?:https?://|www\\.)\\S+|"
                           + URL_SYMBOL)
_WORD_RE = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


def words(text: str) -> list[str]:
    """The words of a text, casefolded, in order (apostrophes inside a word kept)."""
    text = _NOT_WORDS_RE.sub(" ", LINK_RE.sub(" ", text))
    return [w.replace("\u2019", "'") for w in _WORD_RE.findall(text.casefold())]


def count(texts: Iterable[str]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for t in texts:
        counts.update(words(t))
    return counts


def known(counts: collections.Counter, min_count: int = MIN_COUNT) -> frozenset[str]:
    return frozenset(w for w, c in counts.items() if c >= min_count)


@lru_cache(maxsize=4)
def load(path: str | Path = DEFAULT_WORDS, min_count: int = 0) -> frozenset[str]:
    """The list's words (gzip, "word<TAB>count" a line), those seen at least
    `min_count` times; a line without a count is a word seen MIN_COUNT times."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            found = set()
            for line in fh:
                word, _, n = line.rstrip("\n").partition("\t")
                if word and (int(n) if n else MIN_COUNT) >= min_count:
                    found.add(word)
            return frozenset(found)
    except FileNotFoundError:
        raise TrainerError(f"{path}: no such file (make it with python -m trainer words --data FILE)") from None
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise TrainerError(f"{path}: not a word list ({exc})") from None


def save(counts: collections.Counter, path: str | Path, min_count: int = MIN_COUNT) -> int:
    """Writes the words seen at least `min_count` times, with their counts."""
    ordered = sorted(w for w, c in counts.items() if c >= min_count)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write("".join(f"{w}\t{counts[w]}\n" for w in ordered).encode("utf-8"))
    return len(ordered)
