"""Sample, filter, choose: the one way the bot writes a post, for scheduled posts and
replies alike. Plain values in (a loaded model, the near-copy index, the content
checks, sampling knobs), a Selection out; nothing here touches the X API, the disk or
the clock.

Replies are primed with the mention's text so that the model continues its topic; the
prime is cut off again, so a reply is the model's own words only (the filter then
judges exactly what would be posted).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from bot.originality import Checks, NearCopyIndex, Selection, select_from_batches
from trainer.model import Artifact
from trainer.sample import StepNet, sample
from trainer.text import normalize

_MENTION_RE = re.compile(r"[@\uff20]\w+")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+")
PRIME_CHARS = 120  # the mention's last characters the model reads before it writes


@dataclass(frozen=True)
class ComposeParams:
    candidates: int = 64  # per batch
    max_batches: int = 3
    temperature: float = 0.8
    top_p: float = 0.95


def reply_prime(mention_text: str) -> str:
    """What a reply is primed with: the mention without @handles and links, its last
    PRIME_CHARS characters at a word boundary, then a space ("" if nothing is left)."""
    text = " ".join(_URL_RE.sub(" ", _MENTION_RE.sub(" ", mention_text)).split())
    if len(text) > PRIME_CHARS:
        text = text[-PRIME_CHARS:].split(" ", 1)[-1]
    text = normalize(text)
    return text + " " if text else ""


def compose(
    artifact: Artifact,
    index: NearCopyIndex,
    checks: Checks,
    params: ComposeParams = ComposeParams(),
    prime: str = "",
    seed: int | None = None,
    net: StepNet | None = None,
) -> Selection:
    """Candidates for one post or reply, judged. `selection.best.final` is the text to
    post; `selection.best` is None when nothing passed (skip the slot, log why)."""
    net = net or StepNet(artifact)
    draws = iter(range(params.max_batches))

    def batch() -> list[str]:
        n = next(draws)
        texts = sample(artifact, params.candidates, temperature=params.temperature, top_p=params.top_p,
                       prime=prime, seed=None if seed is None else seed + n, net=net)
        if prime:
            # the candidate is what follows the prime; its first letter is capitalized
            texts = [t[len(prime):].strip() if t.startswith(prime) else t for t in texts]
            texts = [t[:1].upper() + t[1:] for t in texts if t]
        return texts

    return select_from_batches(batch, index, checks, max_batches=params.max_batches)
