"""Which words are real: the words of the base corpus (seen at least MIN_COUNT times)
and of an account's own posts. A character model can spell words nobody uses; the
bot posts only candidates whose every word is known (bot/content.py).

Words are what a reader would look up: handles, #tags, URLs and numbers are not words
(a model may write new ones), and case does not matter. The base corpus's list ships
as `trainer/models/words.txt.gz` (a word, its count, its usual form and its language a
line), made by `python -m trainer words --data FILE`.

A word also has the form people write it in, where most of them write it with a
capital in mid-sentence: "Missouri", "December", "NASA". The sampler spells casefolded
words, so it writes "missouri" as readily as "Missouri"; the content checks give such
a word its usual form (bot/content.py). The list's third column holds the form where
it is not all lowercase.

A word may also be of another language than the corpus's main one ("tidak", "aber",
"perché"): a base corpus of a million posts has some of every language, and a model
fine-tuned for an account that writes English still spells them now and then. The
list's fourth column holds, for a word seen in LANGUAGE_MIN posts or more, the share
of those posts (percent) that are in the corpus's main language (`main_language_shares`);
the bot posts another language's words only for an account that writes them
(bot/content.py known_words).

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

# A word's language is judged by the posts it is in. A post is in the corpus's main
# language where MAIN_COMMON_SHARE of its words are among the corpus's TOP_COMMON
# commonest ("the", "to", "a"); that misjudges headlines ("Police probe fatal crash"),
# so a second pass counts a post as of another language only where at least half of
# its words were mostly (below OTHER_FIRST) seen in posts not in the main language.
TOP_COMMON = 100
MAIN_COMMON_SHARE = 0.2
OTHER_FIRST = 0.3
LANGUAGE_MIN = 5  # posts a word needs for its share to be judged
# below this share of main-language posts, a word is of another language: "die" (48%)
# and "per" (71%) are English too, "de" (33%), "yang" (35%) and "aber" (5%) are not
OTHER_SHARE = 40
# an account writes the corpus's main language where fewer than this share of its word
# uses are of another language (the shared English accounts: 0.04-0.2%)
ACCOUNT_OTHER_SHARE = 0.1

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


def main_language_shares(posts: list[list[str]], counts: collections.Counter) -> dict[str, int]:
    """For each word in LANGUAGE_MIN or more of `posts` (each a list of `words`; their
    word `counts`), the share of its posts (percent, rounded down) that are in the
    corpus's main language."""
    common = {w for w, _ in counts.most_common(TOP_COMMON)}

    def shares(in_main) -> dict[str, float]:
        seen: collections.Counter = collections.Counter()
        main: collections.Counter = collections.Counter()
        for ws in posts:
            if ws:
                is_main = in_main(ws)
                for w in set(ws):
                    seen[w] += 1
                    main[w] += is_main
        return {w: main[w] / n for w, n in seen.items() if n >= LANGUAGE_MIN}

    first = shares(lambda ws: sum(w in common for w in ws) >= MAIN_COMMON_SHARE * len(ws))

    def second(ws: list[str]) -> bool:
        judged = [first[w] for w in ws if w in first]
        return not judged or sum(s < OTHER_FIRST for s in judged) * 2 < len(judged)

    return {w: int(100 * s) for w, s in shares(second).items()}


def writes_main_language(counts: collections.Counter, other: frozenset[str]) -> bool:
    """Whether an account (its word `counts`) writes the base corpus's main language:
    few of its word uses are of another language (`other`, from `other_language`)."""
    total = sum(counts.values())
    return not total or sum(n for w, n in counts.items() if w in other) < ACCOUNT_OTHER_SHARE * total


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


@lru_cache(maxsize=4)
def other_language(path: str | Path = DEFAULT_WORDS) -> frozenset[str]:
    """The list's words of another language than the corpus's main one (OTHER_SHARE)."""
    return frozenset(w for w, s in _read(path).main_shares.items() if s < OTHER_SHARE)


@dataclass(frozen=True)
class _List:  # the parsed file
    counts: dict[str, int]
    forms: dict[str, str]
    main_shares: dict[str, int]


@lru_cache(maxsize=4)
def _read(path: str | Path) -> _List:
    """The file parsed once: every caller shares the result (read-only)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            counts, forms, shares = {}, {}, {}
            for line in fh:
                word, n, form, share = (line.rstrip("\n").split("\t") + ["", "", ""])[:4]
                if word:
                    counts[word] = int(n) if n else MIN_COUNT
                    if form:
                        forms[word] = form
                    if share:
                        shares[word] = int(share)
            return _List(counts, forms, shares)
    except FileNotFoundError:
        raise TrainerError(f"{path}: no such file (make it with python -m trainer words --data FILE)") from None
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise TrainerError(f"{path}: not a word list ({exc})") from None


def save(counts: collections.Counter, path: str | Path, min_count: int = MIN_COUNT,
         forms: dict[str, str] | None = None, main_shares: dict[str, int] | None = None) -> int:
    """Writes the words seen at least `min_count` times, with their counts, the usual
    forms (`usual_forms`) that are not all lowercase and the shares of main-language
    posts (`main_language_shares`) under 100."""
    ordered = sorted(w for w, c in counts.items() if c >= min_count)
    forms = {w: f for w, f in (forms or {}).items() if f != w}
    shares = {w: s for w, s in (main_shares or {}).items() if s < 100}

    def line(w: str) -> str:
        columns = [w, str(counts[w]), forms.get(w, "")] + ([str(shares[w])] if w in shares else [])
        return "\t".join(columns).rstrip("\t") + "\n"

    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write("".join(line(w) for w in ordered).encode("utf-8"))
    return len(ordered)
