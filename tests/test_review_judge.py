import textwrap

import pytest

from gateway.review import judge as judges
from gateway.review.judge import LINK_CONFIDENCE, checked, hallucinated_link, load_judge, urls
from gateway.review.plugins import PluginError

TAXONOMY = ("factual_error", "tone", "hallucinated_link")
FLAGGED = {"labels": ["hallucinated_link"], "confidence": LINK_CONFIDENCE}


@pytest.mark.parametrize("input,output,expected", [
    ("Where are the docs?", "See https://docs.example.com/guide.", FLAGGED),
    ("Summarise https://example.com/a", "It says hi: https://example.com/a.", None),
    ("Summarise HTTPS://Example.com/a/", "From https://example.com/a, in short: hi", None),  # same URL, other case
    ("Summarise https://example.com/a", "Also see https://example.com/b", FLAGGED),  # another page, same site
    ("Hello", "Hello! No links here, just www-less text and http:/ broken bits.", None),
    ("Hello", "[docs](https://made-up.example/x) **https://bold.example/y**", FLAGGED),
    ([{"role": "system", "content": "Docs: https://docs.example.com"}, {"role": "user", "content": "Where?"}],
     "At https://docs.example.com/", None),
    ([{"role": "user", "content": "Where?"}], "At https://docs.example.com/", FLAGGED),
    ("Where?", None, None),
])
def test_hallucinated_link(input, output, expected):
    assert hallucinated_link({"input": input, "output": output}) == expected


def test_urls_are_normalised_for_comparison():
    assert urls("a https://Example.COM/Path/. and (http://x.org/y), `https://z.io`") == {
        "https://example.com/Path", "http://x.org/y", "https://z.io"}


@pytest.mark.parametrize("result,expected", [
    ({"labels": ["tone", "made_up", "tone"], "confidence": 0.5}, {"labels": ["tone"], "confidence": 0.5}),
    ({"labels": [], "confidence": 1}, {"labels": [], "confidence": 1.0}),
    (None, None), ("tone", None), ({"labels": "tone", "confidence": 0.5}, None), ({"labels": ["tone"]}, None),
    ({"labels": ["tone"], "confidence": 1.5}, None), ({"labels": ["tone"], "confidence": True}, None),
    ({"labels": ["tone"], "confidence": "high"}, None), ({"labels": [3], "confidence": 0.2}, {"labels": [],
                                                                                              "confidence": 0.2}),
])
def test_checked_keeps_only_a_valid_suggestion(result, expected):
    assert checked(result, TAXONOMY) == expected


class ToneJudge:
    def __call__(self, trace):
        return {"labels": ["tone"], "confidence": 0.3}


def test_load_judge_by_dotted_path():
    assert load_judge("") is None
    assert load_judge("gateway.review.judge:hallucinated_link") is hallucinated_link
    assert load_judge("gateway.review.judge.hallucinated_link") is hallucinated_link
    assert load_judge("tests.test_review_judge:ToneJudge")({"output": "x"}) == {"labels": ["tone"], "confidence": 0.3}
    for bad in ("gateway.review.judge:nothing_here", "no_such_module.judge", "gateway.review.judge:"):
        with pytest.raises(PluginError):
            load_judge(bad)
    with pytest.raises(TypeError):
        load_judge("gateway.review.judge:LINK_CONFIDENCE")


def test_load_judge_by_entry_point(tmp_path, monkeypatch):
    # A real installed distribution as importlib.metadata finds it: a dist-info folder on sys.path.
    info = tmp_path / "acme_judges-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-judges\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(f"""
        [{judges.ENTRY_POINT_GROUP}]
        links = gateway.review.judge:hallucinated_link
        tone = tests.test_review_judge:ToneJudge
        broken = gateway.review.judge:not_there
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_judge("links") is hallucinated_link
    assert isinstance(load_judge("tone"), ToneJudge)
    with pytest.raises(PluginError):
        load_judge("broken")
    with pytest.raises(PluginError):
        load_judge("absent")
