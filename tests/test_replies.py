"""Which mentions get an answer: pure rules over plain values (bot/replies.py)."""
from datetime import datetime, timedelta, timezone

from bot.compose import Style, content_words, reply_keywords
from bot.replies import REPLY, SKIP, WAIT, PastReply, ReplyRules, decide, pick_target

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
RULES = ReplyRules(
    bot_user_id="1", bot_username="xmimic_bot", targets=("elonmusk", "realDonaldTrump"),
    with_model=frozenset({"elonmusk", "realdonaldtrump"}), default_target="realDonaldTrump",
    budget_per_hour=3, max_depth=2, backlog_seconds=3600, blocklist=frozenset({"otherbot"}),
)


def mention(mid: int, text: str = "@xmimic_bot hello there", author: str = "fan", author_id: str = "100",
            age_s: float = 60, conversation: str | None = None) -> dict:
    return {"id": str(mid), "position": mid, "text": text, "author": author, "author_id": author_id,
            "created_at": (NOW - timedelta(seconds=age_s)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conversation_id": conversation or str(mid)}


def actions(decisions):
    return [(d.mention["id"], d.action, d.target) for d in decisions]


def test_target_named_with_or_without_at_sign_else_default():
    assert pick_target("@xmimic_bot do @ElonMusk please", RULES) == "elonmusk"
    assert pick_target("what would realdonaldtrump say", RULES) == "realDonaldTrump"
    assert pick_target("no name here", RULES) == "realDonaldTrump"  # the default target
    assert pick_target("elonmuskfan is not elonmusk?", RULES) == "elonmusk"
    assert pick_target("just elonmuskfan", RULES) == "realDonaldTrump"  # a longer word is not the handle
    assert pick_target("nothing", ReplyRules("1", "b", ("elonmusk",))) is None


def test_reply_budget_per_account_per_hour():
    past = [PastReply("100", "c1", NOW - timedelta(minutes=10)), PastReply("100", "c2", NOW - timedelta(minutes=50)),
            PastReply("100", "c3", NOW - timedelta(minutes=70))]  # the last one is over an hour old
    got = decide([mention(10), mention(11), mention(12, author="other", author_id="200")], RULES,
                 now=NOW, handled=set(), past_replies=past)
    assert actions(got) == [("10", REPLY, "realDonaldTrump"), ("11", SKIP, None), ("12", REPLY, "realDonaldTrump")]
    assert "budget" in got[1].reason


def test_blocklist_and_the_bots_own_posts_are_never_answered():
    got = decide([mention(10, author="OtherBot", author_id="300"), mention(11, author="xmimic_bot", author_id="1")],
                 RULES, now=NOW, handled=set(), past_replies=[])
    assert [d.action for d in got] == [SKIP, SKIP]
    assert "blocklist" in got[0].reason and "own" in got[1].reason


def test_loop_guard_counts_bot_replies_in_a_conversation():
    past = [PastReply("999", "conv", NOW - timedelta(days=2)), PastReply("998", "conv", NOW - timedelta(days=1))]
    got = decide([mention(10, conversation="conv", author_id="500"), mention(11, conversation="fresh", author_id="501")],
                 RULES, now=NOW, handled=set(), past_replies=past)
    assert actions(got) == [("10", SKIP, None), ("11", REPLY, "realDonaldTrump")]
    assert "conversation" in got[0].reason
    # replies decided in the same batch count too: a bot answering every reply stops at max_depth
    chain = [mention(20 + i, conversation="ping", author_id=str(600 + i)) for i in range(4)]
    assert [d.action for d in decide(chain, RULES, now=NOW, handled=set(), past_replies=[])] == [REPLY, REPLY, SKIP, SKIP]


def test_backlog_limit_after_downtime():
    got = decide([mention(10, age_s=7200), mention(11, age_s=30)], RULES, now=NOW, handled=set(), past_replies=[])
    assert actions(got) == [("10", SKIP, None), ("11", REPLY, "realDonaldTrump")]
    assert "backlog" in got[0].reason


def test_each_mention_decided_once_and_waits_for_a_model():
    rules = ReplyRules("1", "xmimic_bot", ("elonmusk", "realDonaldTrump"), with_model=frozenset({"realdonaldtrump"}),
                       default_target="realDonaldTrump")
    got = decide([mention(10), mention(10), mention(11, text="@xmimic_bot elonmusk?"), mention(12)], rules,
                 now=NOW, handled={"12"}, past_replies=[])
    assert actions(got) == [("10", REPLY, "realDonaldTrump"), ("11", WAIT, "elonmusk")]


def test_a_reply_takes_up_the_mentions_topic_words():
    text = "@xmimic_bot what about https://t.co/abc the @elonmusk rocket launch and the launch pad?"
    assert content_words(text) == ["rocket", "launch"]  # no handles, links, stop words or repeats
    assert content_words("@xmimic_bot") == []
    style = Style.of(["Launch day!", "We launch tomorrow", "The launch went well"])
    assert reply_keywords(text, style) == ["launch", "rocket"]  # words the account uses first
    assert reply_keywords("Beautiful magnificent weather", Style()) == ["magnificent", "beautiful", "weather"]
