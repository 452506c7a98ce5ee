"""`GET /v1/stats` and `GET /v1/alerts` over HTTP, against counts made by hand from a small log sent through the API."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

import pytest

from gateway.analytics.rates import SIGNALS
from gateway.routes.stats import parse_stats_query
from tests.conftest import running_gateway
from tests.events import event

H0 = dt.datetime(2026, 11, 2, 10, tzinfo=dt.timezone.utc)
MS = int(H0.timestamp() * 1000)
MIN, HOUR = 60_000, 3_600_000

TRACES = {  # trace: (model, template, template_version, ms after H0)
    "t1": ("model-a", "answer", "v1", 10 * MIN),
    "t2": ("model-b", "answer", "v1", HOUR + 5 * MIN),
    "t3": ("model-b", "summarize", "v2", 24 * HOUR + 30 * MIN),
    **{f"b{i}": ("model-b", "answer", "v1", 2 * HOUR + i * MIN) for i in range(10)},
}


REQUIRED = {"copied": {"length": 10}, "edited": {"edit_ratio": 0.5}, "regenerated": {"attempt": 1},
            "rephrased": {"similarity": 0.8}, "accepted": {"how": "accept"}}


SENT_MS = int(time.time() * 1000) - 60_000  # events carry client times the gateway believes (unlike the traces' ts)


def ev(kind: str, trace: str, session: str, ts: int = 1, **fields):
    return event(kind, trace_id=trace, session_id=session, ts=SENT_MS + ts, **REQUIRED.get(kind, {}), **fields)


EVENTS = [
    # t1 · s1: copied twice (counts once); up, then down with a reason: down only, reason too_long.
    ev("shown", "t1", "s1"), ev("copied", "t1", "s1"), ev("copied", "t1", "s1"),
    ev("feedback", "t1", "s1", 100, value=1), ev("feedback", "t1", "s1", 200, value=0, reason="too_long"),
    # t1 · s2: a newer down vote, then an older up vote arriving late: down stays current.
    ev("shown", "t1", "s2"), ev("regenerated", "t1", "s2"),
    ev("feedback", "t1", "s2", 300, value=0, reason="wrong_information"), ev("feedback", "t1", "s2", 250, value=1),
    # t2 · s1: up. t2 · s3: acted on without a shown event (still an impression).
    ev("shown", "t2", "s1"), ev("feedback", "t2", "s1", value=1),
    ev("rephrased", "t2", "s3"),
    # t3 · s2 (the next day): shown, abandoned.
    ev("shown", "t3", "s2"), ev("abandoned", "t3", "s2"),
    # A session that votes down on all of its 10 impressions: flagged.
    *[e for i in range(10) for e in (ev("shown", f"b{i}", "bot"), ev("feedback", f"b{i}", "bot", value=0,
                                                                         reason="other"))],
]


@pytest.fixture
async def gateway(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), require_token=False) as h:
        for trace, (model, template, version, at) in TRACES.items():
            await h.trace(trace, "s1", model=model, template=template, template_version=version, ts=MS + at)
        for start in range(0, len(EVENTS), 100):
            response = await h.send(*EVENTS[start:start + 100])
            assert response.status_code == 200, response.text
            assert {r["status"] for r in response.json()["results"]} == {"accepted"}, response.text
        yield h


async def get(h, path="/v1/stats", **params):
    return await h.client.get(path, params=params, headers={"Authorization": f"Bearer {h.secret_key}"})


def summary(group):
    """The group's non-zero counts, the way they were counted by hand."""
    return group["shown"], {name: s["count"] for name, s in group["signals"].items() if s["count"]}, group["reasons"]


async def test_counts_by_model_leave_the_flagged_session_out(gateway):
    r = await get(gateway, group_by="model")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["flagged_sessions"] == 1 and body["from"] is None and body["to"] is None
    a, b = body["groups"]
    assert a["key"] == {"model": "model-a"} and b["key"] == {"model": "model-b"}
    # implicit_any: t1 · s1 and t1 · s2; t2 · s3 and t3 · s2 (t2 · s1 only voted)
    assert summary(a) == (2, {"feedback_down": 2, "feedback_any": 2, "copied": 1, "regenerated": 1, "implicit_any": 2},
                          {"too_long": 1, "wrong_information": 1})
    assert summary(b) == (3, {"feedback_up": 1, "feedback_any": 1, "rephrased": 1, "abandoned": 1, "implicit_any": 2},
                          {})
    assert set(a["signals"]) == set(SIGNALS)
    assert a["signals"]["feedback_down"]["rate"] == 1.0
    assert a["signals"]["feedback_down"]["ci"] == pytest.approx([0.342380224, 1.0], abs=1e-6)
    assert a["signals"]["copied"]["ci"] == pytest.approx([0.094531205, 0.905468795], abs=1e-6)
    assert a["signals"]["feedback_up"] == {"count": 0, "rate": 0.0, "ci": pytest.approx([0.0, 0.657619776], abs=1e-6)}
    assert b["signals"]["feedback_up"]["rate"] == pytest.approx(1 / 3)
    assert b["signals"]["feedback_up"]["ci"] == pytest.approx([0.061491944, 0.792340401], abs=1e-6)


async def test_include_flagged_keeps_the_session(gateway):
    body = (await get(gateway, group_by="model", include_flagged="true")).json()
    assert body["flagged_sessions"] == 1
    b = body["groups"][1]
    assert summary(b) == (13, {"feedback_up": 1, "feedback_down": 10, "feedback_any": 11, "rephrased": 1,
                               "abandoned": 1, "implicit_any": 2}, {"other": 10})
    assert b["signals"]["feedback_down"]["ci"] == pytest.approx([0.497436238, 0.918204713], abs=1e-6)
    assert b["signals"]["feedback_any"]["ci"] == pytest.approx([0.577653687, 0.956741822], abs=1e-6)


async def test_one_group_by_default_and_the_threshold_is_a_setting(gateway):
    body = (await get(gateway)).json()
    assert [g["key"] for g in body["groups"]] == [{}]
    assert summary(body["groups"][0])[0] == 5
    # BACKCHANNEL_OUTLIER_MIN_VOTES=11: the bot's 10 alike votes no longer flag it.
    gateway.gateway.settings = dataclasses.replace(gateway.gateway.settings, outlier_min_votes=11)
    body = (await get(gateway)).json()
    assert body["flagged_sessions"] == 0 and summary(body["groups"][0])[0] == 15


async def test_time_range_and_buckets_follow_the_trace_ts(gateway):
    # [H0 + 1 h, H0 + 25 h): t2 (model-b, answer, hour 11), the bot's traces (hour 12) and t3 (the next day, 10:30).
    body = (await get(gateway, group_by="day,hour,template", **{"from": "2026-11-02T11:00:00Z",
                                                                 "to": str(MS + 25 * HOUR)})).json()
    assert body["from"] == MS + HOUR and body["to"] == MS + 25 * HOUR
    assert body["flagged_sessions"] == 1
    assert [(g["key"], g["shown"]) for g in body["groups"]] == [
        ({"day": "2026-11-02", "hour": "2026-11-02T11:00:00Z", "template": "answer"}, 2),
        ({"day": "2026-11-03", "hour": "2026-11-03T10:00:00Z", "template": "summarize"}, 1),
    ]
    # A range inside one hour, and one that cuts an hour in two: counted from the impressions.
    inside = (await get(gateway, **{"from": str(MS + 5 * MIN), "to": str(MS + 15 * MIN)})).json()
    assert summary(inside["groups"][0])[0] == 2
    cut = (await get(gateway, group_by="template_version", **{"from": str(MS + 30 * MIN)})).json()
    assert [(g["key"], g["shown"]) for g in cut["groups"]] == [({"template_version": "v1"}, 2),
                                                               ({"template_version": "v2"}, 1)]
    # The outlier rule looks at the range only: with 5 of the bot's 10 votes the session is not flagged.
    half = (await get(gateway, **{"from": str(MS + 2 * HOUR + 5 * MIN), "to": str(MS + 3 * HOUR)})).json()
    assert half["flagged_sessions"] == 0 and summary(half["groups"][0])[0] == 5


async def test_filters(gateway):
    body = (await get(gateway, group_by="template", model="model-b", include_flagged="1")).json()
    assert [(g["key"], g["shown"]) for g in body["groups"]] == [({"template": "answer"}, 12),
                                                               ({"template": "summarize"}, 1)]
    body = (await get(gateway, template="summarize")).json()
    assert summary(body["groups"][0]) == (1, {"abandoned": 1, "implicit_any": 1}, {})
    assert (await get(gateway, model="nobody")).json()["groups"] == []


BAD = [
    ({"group_by": "model,week"}, "group_by"),
    ({"group_by": "model,model"}, "group_by"),
    ({"from": "yesterday"}, "from"),
    ({"from": "-5"}, "from"),
    ({"to": "99999999999999999999"}, "to"),
    ({"to": "9" * 5000}, "to"),
    ({"from": "²"}, "from"),
    ({"from": "0001-01-01T00:00:00+01:00"}, "from"),
    ({"from": "2026-11-02T10:00:00+25:00"}, "from"),
    ({"state": "open"}, "state"),
    ({"from": "2026-11-02T12:00:00Z", "to": "2026-11-02T11:00:00Z"}, "to"),
    ({"from": "2026-11-02", "to": "2026-11-02"}, "to"),
    ({"include_flagged": "maybe"}, "include_flagged"),
    ({"model": "m" * 201}, "model"),
    ({"model": ""}, "model"),
    ({"groupby": "model"}, "groupby"),
]


async def test_bad_parameters_answer_400_naming_them(harness):
    for params, name in BAD:  # one gateway for the whole table: each start costs a writer process
        r = await get(harness, **params)
        assert r.status_code == 400, params
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["type"] == "urn:backchannel:problem:invalid_parameter"
        assert problem["detail"].startswith(f"{name}: "), (params, problem)


async def test_repeated_parameter_and_auth(gateway):
    r = await gateway.client.get("/v1/stats?model=a&model=b", headers={"Authorization": f"Bearer {gateway.secret_key}"})
    assert r.status_code == 400 and r.json()["detail"].startswith("model: ")
    assert (await gateway.client.get("/v1/stats")).status_code == 401
    r = await gateway.client.get("/v1/stats", headers={"Authorization": f"Bearer {gateway.public_key}"})
    assert r.status_code == 401


def test_times_parse_as_iso_or_ms():
    at = parse_stats_query([("from", "2026-11-02T10:00:00+01:00"), ("to", "2026-11-03")], 10)
    assert at.from_ms == MS - HOUR  # 09:00 UTC
    assert at.to_ms == MS + 14 * HOUR
    assert parse_stats_query([("from", str(MS))], 10).from_ms == MS
    assert parse_stats_query([("from", "2026-11-02T10:00:00")], 10).from_ms == MS  # naive: UTC


async def test_alerts_answer_and_bad_state(gateway):
    r = await get(gateway, "/v1/alerts", state="all")
    assert r.status_code == 200 and r.json() == {"alerts": []}
    r = await get(gateway, "/v1/alerts", state="closed")
    assert r.status_code == 400 and r.json()["detail"].startswith("state: ")


async def test_the_dashboard_signs_in_with_the_secret_key_and_shows_these_answers(gateway):
    origin = {"Origin": "http://gateway.test"}
    r = await gateway.client.post("/dashboard/sign-in", data={"key": gateway.secret_key}, headers=origin)
    assert r.status_code == 303 and "HttpOnly" in r.headers["set-cookie"]
    page = await gateway.client.get("/dashboard", params={"end": "2026-11-03", "range": "7d"})
    assert page.status_code == 200
    assert "<dt>Impressions</dt><dd>5</dd>" in page.text  # the same counts as /v1/stats (flagged left out)
    assert "<dt>Flagged sessions</dt><dd>1 " in page.text
    assert "model-b · answer" in page.text
    store = gateway.gateway.store
    project = await store.project_by_public_key(gateway.public_key)
    await store.revoke_secret_key(project.id, (await store.keys_of(project.id))[0].kid)
    assert "Secret key" in (await gateway.client.get("/dashboard")).text  # revoking the key signs it out
