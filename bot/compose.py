"""Sample, filter, choose: the one way the bot writes a post, for scheduled posts and
replies alike. Plain values in (a loaded model, the near-copy index, the content
checks, what the account's posts look like, sampling knobs), a Selection out; nothing
here touches the X API, the disk or the clock.

How the post is chosen among the candidates that passed the filter (bench/quality_bench.py
measured the alternatives; BENCHMARKS.md): not the most novel one (mostly the shortest
and oddest) nor the most probable one (over-regular text is easier to tell from the
account's), but of the candidates whose length is nearest a length drawn from the
account's newest posts (the length of their own writing: no links, no reply's opening
@handles), the one whose surprise (bits per character under the account's
model) is nearest a quantile drawn from its held-out posts': what is posted has the
account's spread of lengths and of surprise. Every word was
spelled from the allowed list as it was sampled (trainer/spelling.py), and the content
checks have already rejected repeated phrases, unclosed brackets and openings with an
@handle.

A reply starts with one of the mention's content words (preferring words the account
itself uses), so it takes up the mention's topic in the account's voice; the mention's
own text is never fed to the model (a post primed with it ends soon after it, as one
post), and a reply that repeats four or more of the mention's words in a row is rejected.
"""
from __future__ import annotations

import bisect
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable

from bot.originality import Checks, NearCopyIndex, Selection, canonical_tokens, select
from trainer import words as vocabulary
from trainer.model import Artifact
from trainer.sample import StepNet, sample_scored
from trainer.spelling import Speller
from trainer.text import LINK_RE, URL_SYMBOL

LENGTH_TOLERANCE = 0.05  # a passed candidate this near the drawn length quantile ends the drawing
# The candidates nearest the drawn length among which the surprise (bits per character)
# nearest a drawn quantile of the account's held-out posts' is posted (BENCHMARKS.md)
SURPRISE_BAND = 20
KEYWORDS = 3  # a reply's candidates are shared among the mention's first 3 content words
QUOTE_RUN = 4  # a reply may not repeat this many of the mention's words in a row
# Lengths drift: AndrewYang's newest 1,000 training posts have a median of 93 characters,
# all of them 73, and his newest posts (never trained on) 102 (BENCHMARKS.md). The
# newest 500 follow elonmusk's dip (43, all 53, newest 50) too closely.
RECENT_LENGTHS = 1000
NEVER_FIRST = "@.\uff20"  # a post never opens like a reply ("@name", ".@name")
# a reply's opening handles, which the platform shows apart from the text
_OPENING_HANDLES_RE = re.compile("^(?:\\.?[@\uff20][\u200b]*\\w+[\\s,:]*)+")
_HANDLE_RE = re.compile("[@\uff20][\u200b]*\\w")
# Words too common to carry a topic (4+ letters: shorter words are never keywords);
# the benchmark's list of English stop words has all of these.
STOPWORDS = frozenset("""
about above across after afterwards again against almost alone along already also although always among
amongst amount another anyhow anyone anything anyway anywhere around back became because become becomes
becoming been before beforehand behind being below beside besides between beyond both bottom call cannot
cant could couldnt describe detail done down during each eight either eleven else elsewhere empty enough
even ever every everyone everything everywhere except fifteen fifty fill find first five former formerly
forty found four from front full further give hasnt have hence here hereafter hereby herein hereupon hers
herself himself however hundred indeed interest into itself keep last latter latterly least less made many
meanwhile might mine more moreover most mostly move much must myself name namely neither never nevertheless
next nine nobody none noone nothing nowhere often once only onto other others otherwise ours ourselves over
part perhaps please rather same seem seemed seeming seems serious several should show side since sincere
sixty some somehow someone something sometime sometimes somewhere still such system take than that their
them themselves then thence there thereafter thereby therefore therein thereupon these they thick third
this those though three through throughout thru thus together toward towards twelve twenty under until
upon very well were what whatever when whence whenever where whereafter whereas whereby wherein whereupon
wherever whether which while whither whole whom whose will with within without would your yours yourself
yourselves just like really want going gonna make today tonight know think thing things didn't don't
doesn't isn't it's i'm you're we're they're that's there's can't won't
""".split())


@dataclass(frozen=True)
class ComposeParams:
    candidates: int = 128  # per batch
    max_batches: int = 3  # drawn while no passed candidate is near the drawn length
    temperature: float = 1.0
    top_p: float = 1.0
    # no further batch once one more would end past this, when a candidate has passed,
    # and no batch samples past it (the bound from slot to chosen post is 10 s on 2
    # cores: BENCHMARKS.md)
    max_seconds: float = 8.0


@dataclass(frozen=True)
class Style:
    """What the account's own posts look like: the lengths of its newest posts (sorted)
    and how often it uses each word."""

    lengths: tuple[int, ...] = ()
    word_counts: Counter = field(default_factory=Counter)
    handle_share: float = 0.0  # of the newest posts, those naming an @handle in their writing

    @classmethod
    def of(cls, texts: list[str], recent: int = RECENT_LENGTHS) -> Style:
        """`texts` oldest first; the lengths and the handle share are those of the
        newest `recent` as a reader sees their writing (`own_writing`), those with none
        left out."""
        writing = [w for w in map(own_writing, texts[-recent:]) if w]
        share = sum(map(names_handle, writing)) / len(writing) if writing else 0.0
        return cls(tuple(sorted(map(len, writing))), vocabulary.count(texts), share)

    def quantile(self, length: int) -> float:
        """Share of the account's posts shorter than `length` (ties count half)."""
        return _quantile(self.lengths, length) if self.lengths else 0.5


def own_writing(text: str) -> str:
    """A post's own writing: without links and a reply's opening @handles, neither of
    which the bot posts. Aimed at the lengths with them, the bot wrote elonmusk's posts
    (half of them replies) a third longer than his read: median 44 characters against
    33, and easier to tell from his (BENCHMARKS.md)."""
    text = _OPENING_HANDLES_RE.sub("", LINK_RE.sub(" ", text.replace(URL_SYMBOL, " ")).strip())
    return " ".join(text.split())


def names_handle(text: str) -> bool:
    """Whether the text names an @handle (defused or not)."""
    return bool(_HANDLE_RE.search(text))


def content_words(text: str) -> list[str]:
    """A text's topic words, in order, once each: 4+ letters, not stop words."""
    seen: dict[str, None] = {}
    for w in vocabulary.words(text):
        if len(w) >= 4 and w not in STOPWORDS:
            seen.setdefault(w)
    return list(seen)


def reply_keywords(mention: str, style: Style, k: int = KEYWORDS) -> list[str]:
    """The mention's content words a reply may start with: words the account uses
    first (its model can go on from them), longer (rarer) words before shorter."""
    found = content_words(mention)
    return sorted(found, key=lambda w: (style.word_counts.get(w, 0) == 0, -len(w)))[:k]


def compose(
    artifact: Artifact,
    index: NearCopyIndex,
    checks: Checks,
    params: ComposeParams = ComposeParams(),
    mention: str | None = None,
    seed: int | None = None,
    net: StepNet | None = None,
    style: Style = Style(),
    clock: Callable[[], float] = time.monotonic,
) -> Selection:
    """Candidates for one post (or, given the mention's text, one reply: "" for a
    mention with no words), judged and ranked. `selection.best.final` is the text to post; `selection.best` is None when
    nothing passed (skip the slot, log why)."""
    net = net or StepNet(artifact)
    speller = None
    if checks.known_words is not None:
        # every word spelled from the common words and the account's own (trainer/words.py),
        # all of them in the list the content check holds it to (trainer/spelling.py)
        spelled = (vocabulary.load(min_count=vocabulary.COMMON_COUNT) | vocabulary.known(style.word_counts))
        speller = Speller(artifact.vocab, spelled & checks.known_words, marks=checks.known_marks)
    keywords = reply_keywords(mention, style) if mention else []
    is_reply = mention is not None
    draws = iter(range(params.max_batches))

    def batch(seconds: float) -> list[tuple[str, float]]:
        """One batch of candidates and their bits per character, within `seconds` (a
        stalled machine's slot ends in time)."""
        n = next(draws)
        rng_seed = None if seed is None else seed + 1000 * n
        if not keywords:
            return sample_scored(artifact, params.candidates, temperature=params.temperature, top_p=params.top_p,
                          seed=rng_seed, net=net, never_first="" if is_reply else NEVER_FIRST, speller=speller,
                          max_seconds=seconds)
        texts = []
        share = -(-params.candidates // len(keywords))
        ends = time.monotonic() + seconds
        for i, word in enumerate(keywords):
            prime = word[:1].upper() + word[1:] + " "
            texts += sample_scored(artifact, share, temperature=params.temperature, top_p=params.top_p, prime=prime,
                            seed=None if rng_seed is None else rng_seed + i, net=net, speller=speller,
                            max_seconds=ends - time.monotonic())
        return texts

    # A drawn length far from most candidates' may need more than one batch to be matched.
    draw = random.Random(seed)
    target = Target(draw.random(), draw.random(), tuple(artifact.meta.get("heldout_post_bits", ())),
                    handle=draw.random() < style.handle_share)
    total, seen, bits = Selection(), set(), {}
    ranked = total
    started, spent = clock(), 0.0
    for n in range(1, params.max_batches + 1):
        scored = batch(params.max_seconds - spent)
        bits.update(scored)
        got = select([text for text, _ in scored], index, checks, seen=seen)
        if is_reply:
            got = _no_quotes(got, mention)
        total = Selection(total.passed + got.passed, total.rejected + got.rejected, total.batches + 1)
        ranked = rank(total, style, target, mention, bits)
        if any(v.score["length_gap"] <= LENGTH_TOLERANCE and not v.score["handle_miss"] for v in ranked.passed):
            break
        spent = clock() - started
        if ranked.best is not None and spent + spent / n > params.max_seconds:
            break
    return ranked


def _quantile(values: tuple[float, ...], x: float) -> float:
    """Share of the sorted `values` below x (ties count half)."""
    lo, hi = bisect.bisect_left(values, x), bisect.bisect_right(values, x)
    return (lo + hi) / 2 / len(values)


def _no_quotes(selection: Selection, mention: str) -> Selection:
    """Rejects the replies that repeat QUOTE_RUN or more of the mention's words in a row."""
    said = canonical_tokens(mention)
    runs = {tuple(said[i : i + QUOTE_RUN]) for i in range(len(said) - QUOTE_RUN + 1)}
    passed, rejected = [], list(selection.rejected)
    for v in selection.passed:
        mine = canonical_tokens(v.final)
        if any(tuple(mine[i : i + QUOTE_RUN]) in runs for i in range(len(mine) - QUOTE_RUN + 1)):
            rejected.append(replace(v, ok=False, reasons=v.reasons + (f"quotes-mention: {QUOTE_RUN}+ of its words in a row",)))
        else:
            passed.append(v)
    return Selection(passed, rejected, selection.batches)


@dataclass(frozen=True)
class Target:
    """What one slot aims at: a quantile of the account's post lengths, one of its
    held-out posts' bits per character (`surprise`, sorted; empty for a model trained
    before it was recorded: length alone decides) and whether to name an @handle."""

    length: float
    bits: float = 0.5
    surprise: tuple[float, ...] = ()
    handle: bool = False  # whether the post names an @handle (drawn at the account's share)


def rank(selection: Selection, style: Style, target: Target, mention: str | None = None,
         bits: dict[str, float] | None = None) -> Selection:
    """Orders the passed candidates, best first, and records why in each one's score:
    a reply sharing more of the mention's topic words first, then those naming an
    @handle or not as the target says (the account's share of posts that do: the model,
    having learnt from replies, names more), then the length nearest
    the target quantile of the account's own posts' lengths (drawn per slot). Among
    the SURPRISE_BAND nearest in length, the one whose bits per character under the
    account's model (`bits`, by candidate text) is nearest the target quantile of its
    held-out posts' comes first: the account's real posts are neither all predictable
    nor all surprising, and the most predictable samples read least like them."""
    topic = set(content_words(mention)) if mention else set()
    bits = bits or {}
    scored = []
    for v in selection.passed:
        q = style.quantile(len(v.final))
        parts = {"length": len(v.final), "length_quantile": round(q, 3), "target_quantile": round(target.length, 3),
                 "length_gap": round(abs(q - target.length), 3), "novelty": v.novelty,
                 "handle_miss": names_handle(v.final) != target.handle}
        if v.text in bits and target.surprise:
            bq = _quantile(target.surprise, bits[v.text])
            parts |= {"bits_per_char": round(bits[v.text], 3), "bits_quantile": round(bq, 3),
                      "target_bits_quantile": round(target.bits, 3), "bits_gap": round(abs(bq - target.bits), 3)}
        if mention is not None:
            parts["topic_words"] = len(topic.intersection(vocabulary.words(v.final)))
        scored.append(replace(v, score=parts))

    def first(v):  # a reply's topic, then the drawn handle or none
        return -min(v.score.get("topic_words", 0), 2), v.score["handle_miss"]

    scored.sort(key=lambda v: (first(v), v.score["length_gap"]))
    band = sorted(scored[:SURPRISE_BAND], key=lambda v: (first(v), v.score.get("bits_gap", 0.0)))
    ranked = [replace(v, rank=i + 1) for i, v in enumerate(band + scored[SURPRISE_BAND:])]
    return Selection(ranked, selection.rejected, selection.batches)
