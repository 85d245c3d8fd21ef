"""What a post's text is to us: normalization and X's weighted length.

Pure Python on purpose (no numpy, no TensorFlow): the bot's filters import it too.
"""
from __future__ import annotations

import html
import re
import unicodedata

# Private-use code points never occur in real posts, so they can stand for things
# the model must not learn verbatim.
URL_SYMBOL = "\ue000"  # every URL becomes this one symbol (no t.co hashes to learn)

MAX_WEIGHTED_LENGTH = 280
URL_WEIGHT = 23

_URL_RE = re.compile(r"(?:https?://|www\.)\S+|\bpic\.twitter\.com/\S+|\bt\.co/\w+", re.IGNORECASE)
# What X turns into a link: a URL with a scheme, or a bare domain with a known TLD
# ("yang2020.com", "bbc.co.uk", "Go.Bernie.org/now"); a post with a link costs 13
# times as much. twitter-text links a short country-TLD domain ("example.de") only
# with a path after it; `has_link` counts those too, to be safe.
GENERIC_TLDS = (
    "com", "org", "net", "edu", "gov", "mil", "int", "info", "biz", "name", "pro", "mobi", "app", "dev", "news",
    "online", "site", "shop", "store", "blog", "tech", "xyz", "club", "live", "media", "world", "today", "vote",
    "page", "link",
)
COUNTRY_TLDS = (
    "ai", "au", "be", "br", "ca", "ch", "cn", "co", "de", "dk", "es", "eu", "fi", "fm", "fr", "gg", "ie", "in",
    "io", "it", "jp", "kr", "ly", "me", "mx", "nl", "no", "nz", "pl", "pt", "ru", "se", "tv", "uk", "us", "za",
)
LINK_RE = re.compile(
    r"https?://[^\s<>\"]+"  # any URL with a scheme
    r"|(?<![\w@.#$/-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"  # or a bare domain's labels,
    rf"(?:(?P<generic>{'|'.join(GENERIC_TLDS)})|(?P<country>{'|'.join(COUNTRY_TLDS)}))"  # a known TLD
    r"(?![\w-])(?!\.\w)(?::\d{1,5})?(?P<path>/[^\s<>\"]*)?",  # (whole), then a port and path
    re.IGNORECASE,
)
_HSPACE_RE = re.compile(r"[^\S\n]+")
_NEWLINES_RE = re.compile(r"\s*\n\s*")
_RETWEET_RE = re.compile(r"^\W{0,3}RT @\w+", re.IGNORECASE)


def is_retweet(text: str) -> bool:
    """True for old-style retweets (`RT @x: ...`), which are someone else's words."""
    return bool(_RETWEET_RE.match(text.lstrip()))


def has_link(text: str) -> bool:
    """True if X would turn part of `text` into a link (a URL or a bare domain)."""
    return bool(_URL_RE.search(text) or LINK_RE.search(text))


def normalize(text: str) -> str:
    """The canonical form the model trains on and samples in.

    HTML entities decoded, URLs replaced by URL_SYMBOL, control characters dropped,
    runs of spaces collapsed to one, line breaks kept but collapsed to one, NFC.
    Returns "" for posts with no content.
    """
    text = html.unescape(text)
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _URL_RE.sub(URL_SYMBOL, text)
    text = "".join(ch for ch in text if ch == "\n" or ch == "\t" or not _is_control(ch))
    text = _HSPACE_RE.sub(" ", text)
    text = _NEWLINES_RE.sub("\n", text)
    return text.strip()


def _is_control(ch: str) -> bool:
    # Cc/Cf/Cs/Co/Cn, but keep the private-use URL symbol and the zero-width joiner
    # (part of emoji sequences).
    if ch == URL_SYMBOL or ch == "\u200d":
        return False
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cs", "Cn") or (cat == "Cf" and ch not in "\u200d\ufe0f")


def _base_weight(cp: int) -> int:
    # twitter-text v3: these ranges weigh 1, everything else 2.
    if cp <= 4351 or 8192 <= cp <= 8205 or 8208 <= cp <= 8223 or 8242 <= cp <= 8247:
        return 1
    return 2


def _is_emoji_modifier(cp: int) -> bool:
    # Parts of an emoji sequence that add no weight of their own.
    return (
        cp in (0x200D, 0xFE0E, 0xFE0F, 0x20E3)
        or 0x1F3FB <= cp <= 0x1F3FF
        or 0xE0020 <= cp <= 0xE007F
    )


def weighted_length(text: str) -> int:
    """X's weighted length (twitter-text v3): most Latin text counts 1 a character,
    CJK and emoji count 2 (an emoji sequence such as a flag or a ZWJ family counts 2
    in all), and every URL, or URL_SYMBOL, counts 23."""
    total = 0
    pos = 0
    for m in _URL_RE.finditer(text):
        total += _weight_plain(text[pos : m.start()]) + URL_WEIGHT
        pos = m.end()
    return total + _weight_plain(text[pos:])


def _weight_plain(text: str) -> int:
    if text.isascii():  # every ASCII character weighs 1 (and none is part of an emoji sequence)
        return len(text)
    total = 0
    after_zwj = False
    pending_regional = False
    prev_emoji = False
    for ch in text:
        cp = ord(ch)
        if ch == URL_SYMBOL:
            total += URL_WEIGHT
            prev_emoji = after_zwj = pending_regional = False
            continue
        if prev_emoji and _is_emoji_modifier(cp):
            after_zwj = cp == 0x200D
            continue
        if after_zwj:  # the emoji after a joiner is part of the same sequence
            after_zwj = False
            prev_emoji = True
            continue
        if 0x1F1E6 <= cp <= 0x1F1FF:  # two regional indicators make one flag
            if pending_regional:
                pending_regional = False
                continue
            pending_regional = True
            total += 2
            prev_emoji = True
            continue
        pending_regional = False
        w = _base_weight(cp)
        total += w
        prev_emoji = w == 2 or cp in (0x2764, 0x263A) or 0x2600 <= cp <= 0x27BF or ch.isdigit() or ch in "#*"
    return total


def fits(text: str) -> bool:
    """True if X would accept the text's length."""
    return weighted_length(text) <= MAX_WEIGHTED_LENGTH
