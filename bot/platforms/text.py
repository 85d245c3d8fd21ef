"""Text as platforms serve it back, made comparable: what is platform-neutral about
reading posts (used by the platform clients and the archive reader)."""
from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser

from trainer.text import LINK_RE

_WWW_RE = re.compile(r"\bwww\.\S+")


def comparable(text: str, reply: bool = False) -> str:
    """`text` as it can be compared with what X serves back: HTML entities decoded,
    Unicode NFC, every link (X's t.co, a URL, a bare domain) one token, whitespace
    collapsed, and for a reply the leading @handles X puts in front dropped."""
    text = unicodedata.normalize("NFC", html.unescape(text))
    text = LINK_RE.sub("<link>", _WWW_RE.sub("<link>", text))
    if reply:
        text = re.sub(r"^(@\w+\s+)+", "", text)
    return " ".join(text.split())


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.between_paragraphs = False  # markup whitespace there is no text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            self.parts.append("\n\n")
        self.between_paragraphs = False

    def handle_endtag(self, tag: str) -> None:
        self.between_paragraphs = tag == "p"

    def handle_data(self, data: str) -> None:
        if not (self.between_paragraphs and not data.strip()):
            self.parts.append(data)


def html_to_text(content: str) -> str:
    """A status' HTML as the text its author wrote: <br> a line break, a new paragraph a
    blank line, entities decoded, and every link's visible and invisible parts joined (so
    a shortened link is whole again and a mention link is "@name")."""
    if not content:
        return ""
    parser = _TextOfHtml()
    parser.feed(content)
    parser.close()
    text = "".join(parser.parts)
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))
