"""Normalization and X's weighted length."""
from trainer.text import URL_SYMBOL, fits, is_retweet, normalize, weighted_length


def test_entities_are_decoded():
    assert normalize("Fish &amp; chips &lt;3 &quot;yes&quot; &#39;no&#39;") == "Fish & chips <3 \"yes\" 'no'"


def test_every_url_becomes_one_symbol():
    text = "Read this https://t.co/kjgkLiAnGe and http://example.com/a?b=c, www.x.org pic.twitter.com/AbC12"
    assert normalize(text) == f"Read this {URL_SYMBOL} and {URL_SYMBOL} {URL_SYMBOL} {URL_SYMBOL}"


def test_truncated_url_at_the_end_is_still_a_url():
    assert normalize("so much to say… https://t…") == f"so much to say… {URL_SYMBOL}"


def test_whitespace_is_collapsed_but_line_breaks_kept():
    assert normalize("  a \t b   c \r\n\n\n d  ") == "a b c\nd"


def test_empty_and_whitespace_only_posts_become_empty():
    assert normalize("") == ""
    assert normalize(" \t\n \u00a0 ") == ""


def test_emoji_and_accents_survive():
    assert normalize("Café 👍😀🇺🇸 — “quoted”") == "Café 👍😀🇺🇸 — “quoted”"


def test_control_characters_dropped():
    assert normalize("a\x00b\x07c\u200bd") == "abcd"


def test_retweets_detected():
    assert is_retweet("RT @someone: hello")
    assert is_retweet('"RT @someone: hello')
    assert not is_retweet("Great RT @someone said")


def test_weighted_length():
    assert weighted_length("hello") == 5
    assert weighted_length("中文") == 4  # CJK counts 2
    assert weighted_length("👍") == 2
    assert weighted_length("🇺🇸") == 2  # a flag is one emoji
    assert weighted_length("👨\u200d👩\u200d👧") == 2  # a ZWJ family is one emoji
    assert weighted_length("👍🏽") == 2  # skin tone modifier adds nothing
    assert weighted_length("see https://example.com/a/very/long/path/indeed") == 4 + 23
    assert weighted_length(f"see {URL_SYMBOL}") == 4 + 23
    assert fits("a" * 280) and not fits("a" * 281)
    assert fits("中" * 140) and not fits("中" * 141)
