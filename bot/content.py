"""Content checks every candidate post passes before it may be posted: no banned
words, nobody pinged, no placeholder symbols, long enough, short enough for X, not a
repeat of what the bot itself posted lately, and written like a post: real words only
(when a vocabulary is given: of the account's language, and no swear word it never
writes; see known_words), no letters and digits glued together in a way the account
never wrote ("I1"), not opening with an @handle (half of a conversation), no phrase
said twice, no broken flag, no word written twice in a row ("all all"), no space
before a full stop or comma ("lying .") and no apostrophe closing a quote nobody
opened ("document’ smoke") unless the account writes so, brackets and quotes
closed. A word written all lowercase that people write with a capital ("missouri")
is given its usual form.

Plain values in, plain values out: the caller reads the banned-words file path and
the bot's recent posts (store, clock) and hands them over.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from collections import Counter
from typing import Any, Iterable

from bot.errors import BotError
from bot.originality import NearCopyIndex, canonical_tokens
from bot.store import Store, parse_time
from trainer import words as vocabulary
from trainer.text import MAX_WEIGHTED_LENGTH, URL_SYMBOL, URL_WEIGHT, has_link, weighted_length

DEFAULT_BANNED_WORDS_FILE = Path(__file__).resolve().parents[1] / "config" / "banned_words.txt"
DEFAULT_SWEAR_WORDS_FILE = Path(__file__).resolve().parents[1] / "config" / "swear_words.txt"
MENTION_MODES = ("defuse", "reject")
DEFAULT_MIN_WORDS = 2  # "Great work" is a post (37% of elonmusk's have fewer than 4 words)
DEFAULT_REPEAT_DAYS = 30

# X links "@name" only when a handle character follows the "@" (twitter-text's
# mention pattern), so a zero-width space right after it leaves the text readable
# and pings nobody. The fullwidth at sign is a mention sign to X as well.
_LIVE_MENTION_RE = re.compile(r"[@\uff20](?=[A-Za-z0-9_])")
_MENTION_NAME_RE = re.compile(r"[@\uff20]([A-Za-z0-9_]{1,20})")
DEFUSER = "\u200b"
_URL_HINTS = ("://", "www.", "t.co/", "pic.twitter.com")  # raw URLs, should one get here
_WORD_RE = re.compile(r"[^\W_]+")  # words of the visible text, handles included
# what the sampler writes for the model's unknown symbol, and private-use characters
# other than URL_SYMBOL (placeholders of other tools)
_PLACEHOLDER_RE = re.compile("[\ufffd\ue001-\uf8ff\U000f0000-\U0010fffd]")
# Characters X weighs 1 (twitter-text v3) that never start or join an emoji sequence:
# a normalized text made only of these (and no URL) weighs len(text). A fast path
# only; tests check it against trainer.text.weighted_length on real posts.
_LIGHT_ONLY_RE = re.compile("[\u0000-\u10ff\u2000-\u200c\u2010-\u201f\u2032-\u2037]*")
# a #tag or an @handle, defused or not: the model invents them ("@LabrielDonard")
_TAG_RE = re.compile("(?<![\\w#@\uff20])([#@\uff20])\u200b?([A-Za-z0-9_]{1,30})")
# a word with both letters and digits ("2nd", "F9", "COVID19"); the model glues digits
# to words at random ("I1", "Unusual4", "8red"), so only the account's own are posted
_MIXED_RE = re.compile("(?<![\\w#@\uff20\u200b])(?=[^\\W_]*\\d)(?=[^\\W_]*[^\\W\\d_])[^\\W_]+")
# a number with a unit anyone writes: 2nd, 1990s, 9am, 10k, 3x, 5G
_NUMBER_UNIT_RE = re.compile(r"\d+(?:st|nd|rd|th|s|am|pm|k|m|b|bn|x|g|d|mph)", re.IGNORECASE)
# a word of 2+ letters (trainer.words' kind) that is not part of a handle, tag, link or
# hyphenated compound
_RECASE_RE = re.compile("(?<![\\w@#\uff20\u200b/.'\u2019\u2018-])[^\\W\\d_]{2,}(?:['\u2019][^\\W\\d_]+)*(?![\\w/-]|\\.\\w)")
# a hyphenated compound ("face-on"), outside links, handles and tags: its parts keep a
# lowercase form ("missouri-style" is how people write it) but lose a slip's ("FAce-on")
_COMPOUND_RE = re.compile("(?<![\\w@#\uff20\u200b/.'\u2019\u2018-])[^\\W\\d_]+(?:-[^\\W\\d_]+)+(?![\\w/-]|\\.\\w)")
# how people join words ("YouTube", "McCain", "iPhone", "mRNA") or pluralize capitals
# ("CEOs"): a case the model's slips ("BREASt", "OPens", "coKe") do not have
_CAMEL_RE = re.compile(r"(?:[A-Z][a-z]+)+|[A-Z]{2,}s|[a-z](?:[A-Z][a-z]*)+")
_POSSESSIVE_RE = re.compile("['\u2019]s$")
_HANDLE_FIRST_RE = re.compile("^[.\\s]*[@\uff20]")  # "@name ..." and ".@name ...": replies' openings
# a word written twice in a row ("in in"): a slip of the sampler the account makes in
# about 1 post in 500 (and the sampler in 1 in 50 of its posts). HABIT_MIN: how often an
# account must write a doubling ("very very") or a spaced stop for the bot to write it
_DOUBLED_RE = re.compile(r"(?<![\w@#\uff20\u200b])([^\W\d_]+)\s+\1(?![\w'\u2019])", re.IGNORECASE)
HABIT_MIN = 2
# a space before a stop ("to . We", "lying ."): where a link was cut from a post the
# model learned; people put one there rarely, some accounts before "!" by habit
_SPACED_STOP_RE = re.compile(r"[^\W_]\s+([.,;:!?])(?=\s|$)")
# a flag is two regional-indicator letters ("\U0001F1FA\U0001F1F8"); the model writes
# them one at a time, and a lone one shows as a boxed letter
_FLAG_RUN_RE = re.compile("[\U0001F1E6-\U0001F1FF]+")  # a selector between them breaks the pair too
# a word ending in an apostrophe ("Niche\u2019 forgive", "Donald' does"): the model closes
# a quote it never opened. People write one after a plural ("workers\u2019 rights"), for a
# dropped g ("goin'"), to close a quote they opened, or by habit ("rock n' roll")
_END_APOSTROPHE_RE = re.compile("(?<![\\w'\u2019])([^\\W\\d_]+)['\u2019](?![\\w'\u2019])")
_OPEN_QUOTE_RE = re.compile("(?<![\\w'\u2019])['\u2018](?=\\w)")
# a post ending on a word that needs one after it ("Join us at", "Sending our love to"):
# where the post the model learned went on with a link; the accounts end 0-0.4% of
# their posts so (without a link after), the bot 0-2.5%
_DANGLING_END_RE = re.compile(r"(?<![\w'\u2019])(the|a|an|to|of|and|for|with|at|from|by|or|but|our|my|your|their)$",
                              re.IGNORECASE)
_PAIRS = (("(", ")"), ("[", "]"), ("\u201c", "\u201d"))
_STRAY_START = set(",.;:!?'\u2019)]}-_/|\\")  # no post of a person starts mid-sentence


def _weighted_length(text: str, raw_url: bool) -> int:
    """trainer.text.weighted_length, without its per-character loop for the common
    case of light characters and URL_SYMBOLs only (each URL weighs 23)."""
    if not raw_url:
        rest = text.replace(URL_SYMBOL, "")
        if _LIGHT_ONLY_RE.fullmatch(rest):
            return len(rest) + URL_WEIGHT * (len(text) - len(rest))
    return weighted_length(text)


def read_word_list(path: str | Path, kind: str = "banned words") -> list[str]:
    """Words and phrases, one a line; blank lines and `#` comments ignored (the
    banned words, the swear words)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BotError(f"{kind} file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BotError(f"{kind} file {path}: cannot read ({exc})") from None
    words = [line.split("#", 1)[0].strip() for line in lines]
    return [w for w in words if w]


class BannedWords:
    """Whole-word, case-insensitive matching of words and phrases, on the same words
    as everywhere else (punctuation and spacing between a phrase's words do not
    matter); a plural s/es matches too, so the list stays short."""

    def __init__(self, entries: Iterable[str]):
        self.words: set[str] = set()
        self.phrases: list[str] = []  # " word word " forms, plurals included
        for entry in entries:
            words = _WORD_RE.findall(entry.casefold())
            variants = [" ".join(words[:-1] + [words[-1] + end]) for end in ("", "s", "es")] if words else []
            if len(words) == 1:
                self.words.update(variants)
            else:
                self.phrases.extend(f" {v} " for v in variants)

    def find(self, text: str) -> str | None:
        """The first banned word or phrase in text, or None."""
        words = _WORD_RE.findall(text.casefold())
        if not self.words.isdisjoint(words):
            return next(w for w in words if w in self.words)
        if self.phrases:
            padded = " " + " ".join(words) + " "
            for phrase in self.phrases:
                if phrase in padded:
                    return phrase.strip()
        return None


def recase(text: str, forms: dict[str, str]) -> str:
    """Words written all lowercase that have another usual form get it ("missouri" ->
    "Missouri"), and so do words of a case nobody writes ("APril" -> "April"; without a
    usual form, "BREASt" -> "Breast", "coKe" -> "coke"), the parts of a hyphenated
    word too ("FAce-on" -> "Face-on", "missouri-style" stays); shouted, Capitalized,
    "iPhone" and "YouTube"-like words are left as they are, and so are links. A #tag
    or @handle with a form in `forms` ("#maga": "#MAGA") is written in it."""
    def usual(m: re.Match | str) -> str:
        w = m if isinstance(m, str) else m.group()
        lower, stem = w.islower(), _POSSESSIVE_RE.sub("", w)
        if not lower and (stem.isupper() or w[1:].islower() or _CAMEL_RE.fullmatch(stem)):
            return w
        plain = w.replace("\u2019", "'").lower()
        form = forms.get(plain)
        if form is None and plain.endswith("'s") and plain[:-2] in forms:  # "nasa's": "NASA's"
            form = forms[plain[:-2]] + "'s"
        if form is None:
            form = plain if w[0].islower() else plain[0].upper() + plain[1:]
        return form.replace("'", "\u2019" if "\u2019" in w else "'")

    def tag(m: re.Match) -> str:
        form = forms.get(("@" if m.group(1) == "\uff20" else m.group(1)) + m.group(2).lower())
        return m.group() if form is None else m.group()[: -len(m.group(2))] + form[1:]

    def compound(m: re.Match) -> str:
        return "-".join(p if p.islower() or len(p) < 2 else usual(p) for p in m.group().split("-"))
    return _TAG_RE.sub(tag, _COMPOUND_RE.sub(compound, _RECASE_RE.sub(usual, text)))


def defuse_mentions(text: str) -> str:
    """"@name" -> "@\u200bname": same look, no notification, no link."""
    return _LIVE_MENTION_RE.sub(lambda m: m.group(0) + DEFUSER, text)


class ContentChecks:
    """The content rules, compiled once. `check` gives (text to post, reasons);
    the text is only fit to post when reasons is empty."""

    def __init__(
        self,
        *,
        banned_words: Iterable[str] | None = None,
        banned_words_file: str | Path | None = DEFAULT_BANNED_WORDS_FILE,
        mentions: str = "defuse",
        min_words: int = DEFAULT_MIN_WORDS,
        recent_bot_posts: Iterable[str] = (),
        known_words: frozenset[str] | None = None,
        known_marks: frozenset[str] | None = None,
        word_forms: dict[str, str] | None = None,
    ):
        if mentions not in MENTION_MODES:
            raise BotError(f"mentions must be one of {', '.join(MENTION_MODES)}, not {mentions!r}")
        if min_words < 1:
            raise BotError(f"min_words must be at least 1, not {min_words}")
        words = list(banned_words or [])
        if banned_words is None and banned_words_file is not None:
            words = read_word_list(banned_words_file)
        self._banned = BannedWords(words)
        self.mentions = mentions
        self.min_words = min_words
        self.known_words = known_words  # None: any word may be posted
        self.known_marks = known_marks  # "#tag", "@handle", "f9" (lowercase) the account wrote; None: any
        self.word_forms = word_forms or {}  # "missouri" -> "Missouri": written so when written lowercase
        # the bot's recent posts, for every target: X refuses duplicates, and readers
        # would notice; the same near-copy rules as for the target's own posts
        self._recent = NearCopyIndex()
        for i, text in enumerate(recent_bot_posts):
            self._recent.add(f"bot#{i}", text)

    def check(self, text: str) -> tuple[str, list[str]]:
        return self.check_many([text])[0]

    def check_many(self, texts: list[str]) -> list[tuple[str, list[str]]]:
        """(text to post, reasons) for each candidate. Candidates are expected in
        trainer.text.normalize form, as the sampler writes them (the `check` command
        normalizes what people type)."""
        out = [self._check_text(t) for t in texts]
        if len(self._recent):
            for (final, reasons), m in zip(out, self._recent.check_many([f for f, _ in out])):
                if m.copy:
                    reasons.append(f"repeat: the bot posted (nearly) this lately ({m.reason})")
        return out

    def _check_text(self, text: str) -> tuple[str, list[str]]:
        reasons = []
        if not text.strip():
            return text, ["empty: no text"]
        if self.word_forms:
            text = recase(text, self.word_forms)
        lowered = text.lower()
        raw_url = any(h in lowered for h in _URL_HINTS)
        if raw_url or URL_SYMBOL in text or has_link(text):
            reasons.append("url: a link, bare domain or URL placeholder is left (the bot posts no links)")
        if not text.isascii() and _PLACEHOLDER_RE.search(text):
            reasons.append("placeholder: an unknown-character symbol is left")
        if "@" in text or "\uff20" in text:
            if self.mentions == "reject" and _LIVE_MENTION_RE.search(text):
                names = ", ".join("@" + n for n in _MENTION_NAME_RE.findall(text)[:3])
                reasons.append(f"mention: would ping {names}")
            else:
                text = defuse_mentions(text)
        hit = self._banned.find(text)
        if hit:
            reasons.append(f"banned: contains {hit!r}")
        words = len(canonical_tokens(text))
        if words < self.min_words:
            reasons.append(f"too-short: {words} word{'' if words == 1 else 's'} (minimum {self.min_words})")
        length = _weighted_length(text, raw_url)
        if length > MAX_WEIGHTED_LENGTH:
            reasons.append(f"too-long: weighted length {length} (maximum {MAX_WEIGHTED_LENGTH})")
        reasons.extend(self._style(text))
        return text, reasons

    def _habit(self, mark: str) -> bool:
        """Whether the account writes so (`known_marks`: its habits); without an
        account, nothing is."""
        return self.known_marks is not None and mark in self.known_marks

    def _style(self, text: str) -> list[str]:
        """What makes a candidate read as machine-made, or out of place as a post."""
        reasons = []
        if self.known_words is not None:
            unknown = [w for w in vocabulary.words(text) if w not in self.known_words]
            if unknown:
                reasons.append("unknown-word: " + ", ".join(repr(w) for w in unknown[:3]))
        doubled = [m.group() for m in _DOUBLED_RE.finditer(text) if not self._habit(_double_mark(m.group()))]
        if doubled:
            reasons.append("doubled-word: " + ", ".join(repr(w) for w in doubled[:3]))
        spaced = [m.group(1) for m in _SPACED_STOP_RE.finditer(text) if not self._habit(" " + m.group(1))]
        if spaced:
            reasons.append("spaced-stop: a space before " + ", ".join(repr(c) for c in dict.fromkeys(spaced)))
        broken = [run for run in _FLAG_RUN_RE.findall(text)
                  if len(run) % 2 or (self.known_marks is not None
                                      and any(run[i:i + 2] not in self.known_marks for i in range(0, len(run), 2)))]
        if broken:
            reasons.append("broken-flag: " + ", ".join(repr(r) for r in broken[:3]))
        stray = [m.group() for m in _END_APOSTROPHE_RE.finditer(text)
                 if not m.group(1).lower().endswith(("s", "in")) and not _OPEN_QUOTE_RE.search(text, 0, m.end())
                 and not self._habit(_apostrophe_mark(m.group()))]
        if stray:
            reasons.append("stray-apostrophe: " + ", ".join(repr(w) for w in stray[:3]))
        if self.known_marks is not None:
            invented = [mark + name for mark, name in _tags(text) if mark + name.lower() not in self.known_marks]
            if invented:
                reasons.append("invented-tag: " + ", ".join(repr(t) for t in invented[:3]))
            glued = [w for w in _mixed(text) if w.lower() not in self.known_marks]
            if glued:
                reasons.append("letters-and-digits: " + ", ".join(repr(w) for w in glued[:3]))
        if _HANDLE_FIRST_RE.match(text):
            reasons.append("handle-first: opens with an @handle, like a reply")
        elif text[:1] in _STRAY_START:
            reasons.append(f"stray-start: opens with {text[:1]!r}")
        if text.rstrip().endswith(":"):  # "Sign up here:" ends where its link would have been
            reasons.append("dangling-colon: ends with ':', as if a link followed")
        dangling = _DANGLING_END_RE.search(text.rstrip())
        if dangling and not self._habit(_end_mark(dangling.group())):
            reasons.append(f"dangling-word: ends with {dangling.group()!r}, as if a link followed")
        said = canonical_tokens(text)
        trigrams = list(zip(said, said[1:], said[2:]))
        if len(set(trigrams)) < len(trigrams):
            again = next(t for i, t in enumerate(trigrams) if t in trigrams[:i])
            reasons.append(f"repetition: {' '.join(again)!r} twice")
        for left, right in _PAIRS:
            if text.count(left) != text.count(right):
                reasons.append(f"unbalanced: {left}{right}")
        if text.count('"') % 2:
            reasons.append('unbalanced: "')
        return reasons


def _tags(text: str) -> list[tuple[str, str]]:
    return [("@" if mark == "\uff20" else mark, name) for mark, name in _TAG_RE.findall(text)]


def _mixed(text: str) -> list[str]:
    """The words mixing letters and digits, but for a number with a common unit."""
    return [w for w in _MIXED_RE.findall(text) if not _NUMBER_UNIT_RE.fullmatch(w)]


def _double_mark(doubled: str) -> str:
    return " ".join(doubled.lower().split())


def _apostrophe_mark(word: str) -> str:
    return word.lower().replace("\u2019", "'")


def _end_mark(word: str) -> str:
    return "ends " + word.lower()


def known_marks(texts: Iterable[str]) -> frozenset[str]:
    """The #tags and @handles (lowercase, with their mark) an account's posts use, and
    its words of letters and digits ("f9", "covid19"): the only ones the bot may post
    as it (a real handle is defused; an invented one is not posted at all), and the
    flags it wrote (so "\U0001F1FA\U0001F1F8", not a pair the model made up). And its
    habits the checks would otherwise reject: a word it doubles ("very very"), a stop
    it puts a space before (" !"), a word it ends with an apostrophe ("n'") and a word
    it ends a post with where no link follows ("ends for"), each written at least
    HABIT_MIN times."""
    texts = list(texts)
    habits = Counter([_double_mark(m.group()) for text in texts for m in _DOUBLED_RE.finditer(text)]
                     + [" " + m.group(1) for text in texts for m in _SPACED_STOP_RE.finditer(text)]
                     + [_apostrophe_mark(m.group()) for text in texts for m in _END_APOSTROPHE_RE.finditer(text)]
                     + [_end_mark(m.group()) for text in texts if (m := _DANGLING_END_RE.search(text.rstrip()))])
    return frozenset([mark + name.lower() for text in texts for mark, name in _tags(text)]
                     + [w.lower() for text in texts for w in _mixed(text)]
                     + [run[i:i + 2] for text in texts for run in _FLAG_RUN_RE.findall(text) if len(run) % 2 == 0
                        for i in range(0, len(run), 2)]
                     + [habit for habit, n in habits.items() if n >= HABIT_MIN])


def known_words(account_counts: Counter, base_words: frozenset[str] | None = None,
                other_language: frozenset[str] | None = None,
                swear_words: Iterable[str] | None = None) -> frozenset[str]:
    """The words the bot may post as an account: those the account itself used at
    least vocabulary.MIN_COUNT times (`account_counts`: trainer.words.count of its
    posts), and the base corpus's (shipped with the project) but for two kinds the
    account writes only if it wrote them itself: swear words (`swear_words`, patterns
    of config/swear_words.txt) and, for an account that writes the base corpus's main
    language, its words of other languages (`other_language`): a model that has seen
    "tidak" and "aber" spells them at times, and to a reader of the account they are
    noise."""
    base = vocabulary.load() if base_words is None else base_words
    other = vocabulary.other_language() if other_language is None else other_language
    patterns = read_word_list(DEFAULT_SWEAR_WORDS_FILE, "swear words") if swear_words is None else swear_words
    held_back = swearing(base, patterns)
    if vocabulary.writes_main_language(account_counts, other):
        held_back |= other
    return (base - held_back) | vocabulary.known(account_counts)


def swearing(words: Iterable[str], patterns: Iterable[str]) -> frozenset[str]:
    """The `words` (casefolded) a pattern matches: a word, or a stem and "*"."""
    patterns = [p.casefold() for p in patterns]
    exact = {p for p in patterns if not p.endswith("*")}
    stems = tuple(p[:-1] for p in patterns if p.endswith("*"))
    return frozenset(w for w in words if w in exact or w.startswith(stems))


def word_forms(texts: Iterable[str], base_forms: dict[str, str] | None = None,
               base_words: frozenset[str] | None = None) -> dict[str, str]:
    """The usual form of each word that has one (trainer.words): the base corpus's,
    and the account's own for its words the base corpus does not have ("SpaceX").
    The base corpus has the broader view: in an account's posts "general" is
    capitalized because it is always "Attorney General". And each #tag and @handle
    the account wrote, as it most often wrote it ("#maga": "#MAGA")."""
    base = vocabulary.load_forms() if base_forms is None else base_forms
    known = vocabulary.load() if base_words is None else base_words
    texts = list(texts)
    own = vocabulary.usual_forms(vocabulary.written(texts), min_count=3)
    written = Counter(mark + name for text in texts for mark, name in _tags(text))
    tags = {}
    for form, _ in written.most_common():
        tags.setdefault(form.lower(), form)
    # a form with capitals inside ("DeSantis") is the account's own even where the
    # base corpus knows the word, unless it has a form there: the checks would
    # otherwise flatten it as a case nobody writes
    return {w: f for w, f in own.items()
            if w != f and (w not in known or (w not in base and not f.isupper() and not f[1:].islower()))} | base | tags


def checks_from_store(
    store: Store,
    *,
    now: datetime,
    repeat_days: int = DEFAULT_REPEAT_DAYS,
    **rules: Any,
) -> ContentChecks:
    """ContentChecks with the bot's posts of the last `repeat_days` days (any target)
    as the posts not to repeat; `rules` are ContentChecks' other keyword arguments."""
    if repeat_days < 0:
        raise BotError(f"repeat_days must be 0 or more, not {repeat_days}")
    cut = now - timedelta(days=repeat_days)
    recent = [e for e in store.recent_bot_posts(since=cut)  # recorded since: read only those
              if parse_time(e.get("posted_at") or e["recorded_at"]) >= cut] if repeat_days else []
    return ContentChecks(recent_bot_posts=[b["text"] for b in recent], **rules)
