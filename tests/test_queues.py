"""The review loop over HTTP: traces with messages and parents, reviewer keys, label taxonomies, queues (fill, claim,
leases, labels, skips, agreement), the judge hook, and what a reviewer key may not do."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from typing import Any

import httpx
import pytest

from gateway import tokens
from gateway.review.fill import auto_fill_once
from gateway.store.review import DEFAULT_LABELS
from tests.conftest import ORIGIN, Harness, running_gateway


def now_ms() -> int:
    return int(time.time() * 1000)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def project_id(h: Harness) -> int:
    project = await h.gateway.store.project_by_public_key(h.public_key)
    assert project is not None
    return project.id


async def reviewer(h: Harness, name: str) -> str:
    key = await h.gateway.store.review.add_reviewer(await project_id(h), name, now_ms())
    assert key is not None and key.startswith("rk_")
    return key


async def vote(h: Harness, trace_id: str, session_id: str, value: int, reason: str | None = None,
               comment: str | None = None) -> None:
    token, _ = tokens.mint(h.secret_key, public_key=h.public_key, trace_id=trace_id, session_id=session_id, ttl=3600)
    event: dict[str, Any] = {"type": "feedback", "id": str(uuid.uuid4()), "trace_id": trace_id, "token": token,
                             "ts": now_ms(), "value": value}
    if reason:
        event["reason"] = reason
    if comment:
        event["comment"] = comment
    response = await h.send(event)
    assert response.json()["results"][0]["status"] == "accepted", response.text


async def make_queue(h: Harness, **spec: Any) -> dict[str, Any]:
    response = await h.client.post("/v1/queues", json={"name": "q", **spec}, headers=auth(h.secret_key))
    assert response.status_code == 201, response.text
    return response.json()


async def fill(h: Harness, queue_id: str) -> dict[str, Any]:
    response = await h.client.post(f"/v1/queues/{queue_id}/fill", headers=auth(h.secret_key))
    assert response.status_code == 200, response.text
    return response.json()


async def claim(h: Harness, queue_id: str, key: str) -> httpx.Response:
    return await h.client.post(f"/v1/queues/{queue_id}/claim", headers=auth(key))


async def label(h: Harness, queue_id: str, item_id: int, key: str, **body: Any) -> httpx.Response:
    return await h.client.post(f"/v1/queues/{queue_id}/items/{item_id}/label", json={"labels": [], **body},
                               headers=auth(key))


async def queue_state(h: Harness, queue_id: str) -> dict[str, Any]:
    response = await h.client.get(f"/v1/queues/{queue_id}", headers=auth(h.secret_key))
    assert response.status_code == 200, response.text
    return response.json()


async def filled_queue(h: Harness, count: int, **spec: Any) -> dict[str, Any]:
    """A queue of `count` new traces, filled with all of them."""
    await traces(h, count)
    queue = await make_queue(h, sampling={"size": count, "random_share": 0}, **spec)
    assert (await fill(h, queue["id"]))["added"] == count
    return queue


async def traces(h: Harness, count: int, prefix: str = "t", **fields: Any) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(count)]
    for i, trace_id in enumerate(ids):
        await h.trace(trace_id, f"s-{prefix}{i}", input=f"question {prefix} {i}", output=f"answer {i}", **fields)
    return ids


# --- Traces carry more ---

async def test_messages_and_parents_are_stored_and_answered_as_sent(harness):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]
    await harness.trace("first", input=messages, output="Rayleigh scattering.")
    await harness.trace("again", input=messages, output="Because of scattering.", parent_trace_id="first")
    await harness.trace("plain", input="Why is the sky blue?", output="Light.")
    first, again, plain = [await harness.stored(t) for t in ("first", "again", "plain")]
    assert first["input"] == messages and first["parent_trace_id"] is None
    assert again["input"] == messages and again["parent_trace_id"] == "first"
    assert plain["input"] == "Why is the sky blue?"
    with sqlite3.connect(harness.db) as conn:
        keys = dict(conn.execute("SELECT trace_id, prompt_key FROM traces"))
    assert keys["first"] == keys["again"] != keys["plain"]


async def test_a_regeneration_takes_its_parents_prompt_even_with_another_input(harness):
    await harness.trace("p", input="Write a haiku", output="one")
    await harness.trace("r", input="Write a haiku (regenerated)", output="two", parent_trace_id="p")
    await harness.trace("orphan", input="Write a haiku", output="three", parent_trace_id="never-logged")
    with sqlite3.connect(harness.db) as conn:
        keys = dict(conn.execute("SELECT trace_id, prompt_key FROM traces"))
    assert keys["p"] == keys["r"] == keys["orphan"]


@pytest.mark.parametrize("body", [
    {"input": [{"role": "robot", "content": "x"}]},
    {"input": [{"role": "user"}]},
    {"input": [{"role": "user", "content": "x", "name": "extra"}]},
    {"input": {"role": "user", "content": "x"}},
    {"parent_trace_id": ""},
    {"parent_trace_id": 7},
])
async def test_bad_messages_and_parents_are_refused(harness, body):
    response = await harness.client.post("/v1/traces", json={"trace_id": "t", "session_id": "s", **body},
                                         headers=auth(harness.secret_key))
    assert response.status_code == 400 and response.json()["type"].endswith("malformed")


# --- Labels ---

async def test_label_taxonomy_defaults_and_replacement(harness):
    path = f"/v1/projects/{harness.public_key}/labels"
    response = await harness.client.get(path, headers=auth(harness.secret_key))
    assert response.json() == {"labels": list(DEFAULT_LABELS)}
    response = await harness.client.put(path, json={"labels": ["wrong", "rude", "wrong"]},
                                        headers=auth(harness.secret_key))
    assert response.status_code == 200 and response.json() == {"labels": ["wrong", "rude"]}
    assert (await harness.client.get(path, headers=auth(harness.secret_key))).json() == {"labels": ["wrong", "rude"]}


@pytest.mark.parametrize("body", [{"labels": []}, {"labels": ["Has Space"]}, {"labels": "tone"}, {},
                                  {"labels": ["x" * 65]}, {"labels": ["a"], "more": 1}])
async def test_bad_label_sets_are_refused(harness, body):
    response = await harness.client.put(f"/v1/projects/{harness.public_key}/labels", json=body,
                                        headers=auth(harness.secret_key))
    assert response.status_code == 400 and response.json()["type"].endswith("malformed")


async def test_another_projects_labels_are_not_found(harness):
    other, _ = await harness.gateway.store.create_project(name="other", origins=["*"])
    response = await harness.client.get(f"/v1/projects/{other.public_key}/labels", headers=auth(harness.secret_key))
    assert response.status_code == 404


# --- Queues: create and fill ---

@pytest.mark.parametrize("body", [
    {},
    {"name": ""},
    {"name": "q", "kind": "triple"},
    {"name": "q", "sampling": {"strategy": "magic"}},
    {"name": "q", "sampling": {"size": 0}},
    {"name": "q", "sampling": {"random_share": 1.5}},
    {"name": "q", "filter": {"vote": "sideways"}},
    {"name": "q", "filter": {"signal": "teleported"}},
    {"name": "q", "filter": {"since": "last tuesday"}},
    {"name": "q", "filter": {"colour": "red"}},
    {"name": "q", "reviewers_per_item": 0},
    {"name": "q", "lease_seconds": 0},
    {"name": "q", "auto_fill": "hourly"},
])
async def test_bad_queues_are_refused(harness, body):
    response = await harness.client.post("/v1/queues", json=body, headers=auth(harness.secret_key))
    assert response.status_code == 400 and response.json()["type"].endswith("malformed"), response.text


async def test_a_queue_is_created_and_answered_with_its_counts(harness):
    queue = await make_queue(harness, filter={"vote": "down", "since": "7d"}, instructions="Look for errors.")
    assert queue["id"].startswith("q_") and queue["name"] == "q" and queue["kind"] == "single"
    assert queue["filter"] == {"vote": "down", "since": "7d"} and queue["instructions"] == "Look for errors."
    assert queue["counts"] == {"pending": 0, "leased": 0, "done": 0, "skipped": 0}
    assert (await queue_state(harness, queue["id"]))["id"] == queue["id"]
    listed = (await harness.client.get("/v1/queues", headers=auth(harness.secret_key))).json()["queues"]
    assert [q["id"] for q in listed] == [queue["id"]]
    response = await harness.client.get("/v1/queues/q_nope", headers=auth(harness.secret_key))
    assert response.status_code == 404


async def test_a_fill_takes_the_filtered_traces_plus_a_random_share_from_all_and_never_one_twice(harness):
    ids = await traces(harness, 40)
    downs = ids[:10]
    for trace_id in downs:
        await vote(harness, trace_id, f"voter-{trace_id}", 0, reason="too_long")
    queue = await make_queue(harness, filter={"vote": ["down"], "reason": "too_long"},
                             sampling={"strategy": "all", "size": 10, "random_share": 0.3, "seed": 3})
    first = await fill(harness, queue["id"])
    assert first == {"added": 10, "by_strategy": {"all": 7, "random": 3}}
    again = await fill(harness, queue["id"])  # the random draw may take the three filtered ones still out
    assert again["added"] == 3 + again["by_strategy"].get("all", 0)
    with sqlite3.connect(harness.db) as conn:
        rows = conn.execute("SELECT key, strategy FROM queue_items WHERE queue_id = ?", (queue["id"],)).fetchall()
    keys = [key for key, _ in rows]
    assert len(keys) == len(set(keys)) == 13 + again["by_strategy"].get("all", 0)
    assert {key for key, strategy in rows if strategy == "all"} <= set(downs)
    assert {key for key, strategy in rows if strategy == "random"} - set(downs)  # drawn from outside the filter too
    state = await queue_state(harness, queue["id"])
    assert state["counts"]["pending"] == len(keys)
    assert state["by_strategy"] == {"all": 7 + again["by_strategy"].get("all", 0), "random": 6}


async def test_flagged_sessions_votes_match_nothing_unless_included(harness):
    ids = await traces(harness, 12)
    for trace_id in ids[:10]:  # one session voting down on ten traces: the outlier rule flags it
        await vote(harness, trace_id, "angry", 0)
    await vote(harness, ids[11], "calm", 0)
    leaving_out = await make_queue(harness, filter={"vote": "down"}, sampling={"size": 50, "random_share": 0})
    assert (await fill(harness, leaving_out["id"]))["added"] == 1
    including = await make_queue(harness, filter={"vote": "down", "include_flagged": True},
                                 sampling={"size": 50, "random_share": 0})
    assert (await fill(harness, including["id"]))["added"] == 11


async def test_filters_on_template_model_signal_and_time(harness):
    old = now_ms() - 10 * 86_400_000
    await harness.trace("old", "s1", template="answer", model="m1", input="a", output="b", ts=old)
    await harness.trace("new", "s2", template="answer", model="m1", input="c", output="d")
    await harness.trace("other", "s3", template="summarize", model="m2", input="e", output="f")
    token, _ = tokens.mint(harness.secret_key, public_key=harness.public_key, trace_id="other", session_id="s3",
                           ttl=3600)
    await harness.send({"type": "copied", "id": str(uuid.uuid4()), "trace_id": "other", "token": token,
                        "ts": now_ms(), "length": 3})

    async def picked(**filter: Any) -> set[str]:
        queue = await make_queue(harness, filter=filter, sampling={"size": 50, "random_share": 0})
        await fill(harness, queue["id"])
        with sqlite3.connect(harness.db) as conn:
            return {a for (a,) in conn.execute("SELECT a FROM queue_items WHERE queue_id = ?", (queue["id"],))}

    assert await picked(template="answer") == {"old", "new"}
    assert await picked(template="answer", since="7d") == {"new"}
    assert await picked(until=old + 1) == {"old"}
    assert await picked(model=["m2"]) == {"other"}
    assert await picked(signal="copied") == {"other"}


# --- Claims, leases, labels ---

async def test_claim_answers_the_trace_as_get_does_with_the_queue_and_nothing_left_is_204(harness):
    await harness.trace("t0", input=[{"role": "user", "content": "hi"}], output="<script>alert(1)</script>")
    await vote(harness, "t0", "v", 0, reason="other", comment="rude")
    key = await reviewer(harness, "ann")
    queue = await make_queue(harness, sampling={"size": 5, "random_share": 0}, instructions="Be fair.")
    assert (await fill(harness, queue["id"]))["added"] == 1
    response = await claim(harness, queue["id"], key)
    assert response.status_code == 200
    claimed = response.json()
    assert claimed["queue"] == {"id": queue["id"], "name": "q", "kind": "single", "instructions": "Be fair.",
                                "labels": list(DEFAULT_LABELS)}
    assert claimed["lease_expires_at"] > now_ms() + 590_000
    trace = claimed["trace"]
    assert trace.pop("judge") is None
    assert trace == await harness.stored("t0")
    # The holder may read the trace with its reviewer key; no other trace.
    assert (await harness.client.get("/v1/traces/t0", headers=auth(key))).json() == trace
    await harness.trace("t1")
    assert (await harness.client.get("/v1/traces/t1", headers=auth(key))).status_code == 403
    # A second claim by the holder answers the same item (a reload); another reviewer gets nothing.
    assert (await claim(harness, queue["id"], key)).json()["item_id"] == claimed["item_id"]
    assert (await claim(harness, queue["id"], await reviewer(harness, "bob"))).status_code == 204
    response = await label(harness, queue["id"], claimed["item_id"], key, labels=["tone"], note="sharp")
    assert response.status_code == 200 and response.json() == {"item_id": claimed["item_id"], "status": "labeled"}
    assert (await claim(harness, queue["id"], key)).status_code == 204
    assert (await harness.client.get("/v1/traces/t0", headers=auth(key))).status_code == 403  # no longer held
    assert (await queue_state(harness, queue["id"]))["counts"] == {"pending": 0, "leased": 0, "done": 1,
                                                                   "skipped": 0}


async def test_twenty_concurrent_claims_by_five_reviewers_never_share_an_item(harness):
    queue = await filled_queue(harness, 30)
    keys = {name: await reviewer(harness, name) for name in ("a", "b", "c", "d", "e")}
    holders: dict[int, set[str]] = {}

    async def claim_as(name: str) -> int:
        response = await claim(harness, queue["id"], keys[name])
        assert response.status_code == 200
        item = response.json()["item_id"]
        holders.setdefault(item, set()).add(name)
        return item

    # Twenty claims at once, four per reviewer: each reviewer holds one item (its repeats answer the same one).
    await asyncio.gather(*(claim_as(name) for name in keys for _ in range(4)))
    assert len(holders) == 5 and all(len(names) == 1 for names in holders.values())

    # Then twenty rounds of claim-and-label at once (each reviewer first labels the item it holds): every item is
    # labeled by exactly one reviewer.
    async def work(name: str) -> None:
        for _ in range(4):
            item = await claim_as(name)
            response = await label(harness, queue["id"], item, keys[name], labels=["other"])
            assert response.status_code == 200, response.text

    await asyncio.gather(*(work(name) for name in keys))
    assert all(len(names) == 1 for names in holders.values())
    with sqlite3.connect(harness.db) as conn:
        labeled = conn.execute("SELECT item, count(*) FROM queue_labels GROUP BY item").fetchall()
    assert len(labeled) == 20 and all(count == 1 for _, count in labeled)
    counts = (await queue_state(harness, queue["id"]))["counts"]
    assert counts == {"pending": 10, "leased": 0, "done": 20, "skipped": 0}


async def test_an_expired_lease_returns_and_the_late_holder_gets_410(harness):
    queue = await filled_queue(harness, 1, lease_seconds=1)
    ann, bob = await reviewer(harness, "ann"), await reviewer(harness, "bob")
    item = (await claim(harness, queue["id"], ann)).json()["item_id"]
    deadline = time.monotonic() + 10
    while (taken := await claim(harness, queue["id"], bob)).status_code == 204:
        assert time.monotonic() < deadline, "the expired lease never came back"
        await asyncio.sleep(0.05)
    assert taken.json()["item_id"] == item
    response = await label(harness, queue["id"], item, ann, labels=["tone"])
    assert response.status_code == 410 and response.json()["type"].endswith("lease_expired")
    response = await harness.client.post(f"/v1/queues/{queue['id']}/items/{item}/skip", headers=auth(ann))
    assert response.status_code == 410
    assert (await label(harness, queue["id"], item, bob, labels=["tone"])).status_code == 200


async def test_a_holder_whose_lease_expired_unclaimed_may_still_finish(harness):
    queue = await filled_queue(harness, 1, lease_seconds=1)
    ann = await reviewer(harness, "ann")
    claimed = (await claim(harness, queue["id"], ann)).json()
    while now_ms() <= claimed["lease_expires_at"]:
        await asyncio.sleep(0.05)
    assert (await queue_state(harness, queue["id"]))["counts"]["pending"] == 1
    assert (await label(harness, queue["id"], claimed["item_id"], ann, labels=[])).status_code == 200


async def test_label_errors(harness):
    queue = await filled_queue(harness, 2)
    ann, bob = await reviewer(harness, "ann"), await reviewer(harness, "bob")
    item = (await claim(harness, queue["id"], ann)).json()["item_id"]
    response = await label(harness, queue["id"], item, ann, labels=["tone", "made_up"])
    assert response.status_code == 400 and response.json()["type"].endswith("unknown_label")
    response = await label(harness, queue["id"], item, bob, labels=["tone"])
    assert response.status_code == 409 and response.json()["type"].endswith("not_lease_holder")
    response = await label(harness, queue["id"], item, ann, labels=["tone"], preferred="a")
    assert response.status_code == 400  # a single item has no sides
    assert (await label(harness, queue["id"], 999_999, ann)).status_code == 404
    response = await harness.client.post(f"/v1/queues/{queue['id']}/items/{item}/label", content=b"{",
                                         headers={**auth(ann), "Content-Type": "application/json"})
    assert response.status_code == 400
    response = await harness.client.post(f"/v1/queues/{queue['id']}/items/{item}/label", content=b"{}",
                                         headers={**auth(ann), "Content-Type": "text/plain"})
    assert response.status_code == 415
    # The secret key acts for a named reviewer, and must name one.
    response = await label(harness, queue["id"], item, harness.secret_key, labels=["tone"])
    assert response.status_code == 400
    response = await label(harness, queue["id"], item, harness.secret_key, labels=["tone"], reviewer="ann")
    assert response.status_code == 200
    # A reviewer key cannot act for another reviewer.
    item = (await claim(harness, queue["id"], bob)).json()["item_id"]
    response = await label(harness, queue["id"], item, bob, labels=[], reviewer="ann")
    assert response.status_code == 403


async def test_the_secret_key_claims_for_a_named_reviewer(harness):
    queue = await filled_queue(harness, 1)
    response = await harness.client.post(f"/v1/queues/{queue['id']}/claim", headers=auth(harness.secret_key))
    assert response.status_code == 400
    response = await harness.client.post(f"/v1/queues/{queue['id']}/claim", json={"reviewer": "carol"},
                                         headers=auth(harness.secret_key))
    assert response.status_code == 200
    assert (await label(harness, queue["id"], response.json()["item_id"], harness.secret_key,
                        reviewer="carol")).status_code == 200


async def test_a_skip_returns_the_item_to_the_others_never_to_the_skipper(harness):
    queue = await filled_queue(harness, 1)
    ann, bob = await reviewer(harness, "ann"), await reviewer(harness, "bob")
    item = (await claim(harness, queue["id"], ann)).json()["item_id"]
    response = await harness.client.post(f"/v1/queues/{queue['id']}/items/{item}/skip", headers=auth(ann))
    assert response.status_code == 200 and response.json()["status"] == "skipped"
    assert (await queue_state(harness, queue["id"]))["counts"]["skipped"] == 1
    assert (await claim(harness, queue["id"], ann)).status_code == 204
    assert (await claim(harness, queue["id"], bob)).json()["item_id"] == item


async def test_reviewers_per_item_and_agreement(harness):
    queue = await filled_queue(harness, 4, reviewers_per_item=2)
    ann, bob = await reviewer(harness, "ann"), await reviewer(harness, "bob")
    # Hand count for `tone`: ann yes, yes, no, no; bob yes, no, no, no. p_o = 3/4; p_e = (2·1 + 2·3)/16 = 1/2;
    # kappa = (3/4 - 1/2) / (1 - 1/2) = 1/2.
    given = {"ann": [["tone"], ["tone"], [], []], "bob": [["tone"], [], [], []]}
    seen: dict[str, list[int]] = {"ann": [], "bob": []}
    for name, key in (("ann", ann), ("bob", bob)):
        for labels in given[name]:
            item = (await claim(harness, queue["id"], key)).json()["item_id"]
            assert item not in seen[name]  # never twice to one reviewer
            seen[name].append(item)
            assert (await label(harness, queue["id"], item, key, labels=labels)).status_code == 200
            if name == "ann":
                assert (await queue_state(harness, queue["id"]))["counts"]["done"] == 0
        assert (await claim(harness, queue["id"], key)).status_code == 204
    assert seen["ann"] == seen["bob"]  # both went through the queue in fill order
    state = await queue_state(harness, queue["id"])
    assert state["counts"] == {"pending": 0, "leased": 0, "done": 4, "skipped": 0}
    tone = state["agreement"]["labels"]["tone"]
    assert tone["method"] == "cohen_kappa" and tone["items"] == 4 and tone["reviewers"] == 2
    assert tone["value"] == pytest.approx(0.5)
    assert state["agreement"]["labels"]["unsafe"]["value"] is None  # nobody ever said yes: undefined


async def test_pairwise_queues_pair_regenerations_and_need_a_preference(harness):
    await harness.trace("p1", input="Name a colour", output="Red")
    await harness.trace("p2", input="Name a colour (again)", output="Blue", parent_trace_id="p1")
    await harness.trace("p3", input="Name a colour", output="Green")
    await harness.trace("lonely", input="Something else", output="x")
    queue = await make_queue(harness, kind="pairwise", sampling={"size": 10, "random_share": 0})
    assert (await fill(harness, queue["id"]))["added"] == 2  # p1-p2 and p2-p3 in time order
    ann = await reviewer(harness, "ann")
    claimed = (await claim(harness, queue["id"], ann)).json()
    assert "trace" not in claimed and {claimed["a"]["trace_id"], claimed["b"]["trace_id"]} <= {"p1", "p2", "p3"}
    assert claimed["a"]["trace_id"] != claimed["b"]["trace_id"]
    assert claimed["queue"]["kind"] == "pairwise"
    for side in ("a", "b"):
        assert (await harness.client.get(f"/v1/traces/{claimed[side]['trace_id']}", headers=auth(ann))
                ).status_code == 200
    response = await label(harness, queue["id"], claimed["item_id"], ann, labels=[])
    assert response.status_code == 400
    response = await label(harness, queue["id"], claimed["item_id"], ann, labels=[], preferred="b")
    assert response.status_code == 200
    assert (await queue_state(harness, queue["id"]))["agreement"]["preferred"] is None


async def test_the_judge_pre_labels_at_fill_time(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), judge="gateway.review.judge:hallucinated_link") as h:
        await h.trace("link", input="Where are the docs?", output="See https://docs.example.com/x.")
        await h.trace("quiet", input="Hi", output="Hello")
        queue = await make_queue(h, sampling={"size": 5, "random_share": 0})
        await fill(h, queue["id"])
        ann = await reviewer(h, "ann")
        suggestions = {}
        while (response := await claim(h, queue["id"], ann)).status_code == 200:
            trace = response.json()["trace"]
            suggestions[trace["trace_id"]] = trace["judge"]
            await label(h, queue["id"], response.json()["item_id"], ann)
    assert suggestions == {"link": {"labels": ["hallucinated_link"], "confidence": 0.6}, "quiet": None}


def test_a_judge_that_cannot_be_loaded_stops_the_gateway(tmp_path):
    from gateway.core import Gateway
    from gateway.settings import Settings

    with pytest.raises(ValueError, match="BACKCHANNEL_JUDGE"):
        Gateway(Settings.load(environ={}, db=str(tmp_path / "bc.db"), judge="no.such.module:judge"))


async def test_daily_auto_fill_fills_due_queues_once_a_day(harness):
    await traces(harness, 3)
    daily = await make_queue(harness, auto_fill="daily", sampling={"size": 2, "random_share": 0})
    await make_queue(harness, sampling={"size": 2, "random_share": 0})
    store = harness.gateway.store
    start = now_ms()
    assert await auto_fill_once(store, judge=None, embedder=None, now=start) == [daily["id"]]
    assert await auto_fill_once(store, judge=None, embedder=None, now=start + 3_600_000) == []
    assert await auto_fill_once(store, judge=None, embedder=None, now=start + 86_400_000) == [daily["id"]]
    assert (await queue_state(harness, daily["id"]))["counts"]["pending"] == 3


# --- What a reviewer key may not do ---

async def test_every_other_route_refuses_a_reviewer_key(harness):
    await traces(harness, 1)
    queue = await make_queue(harness, sampling={"size": 1, "random_share": 0})
    key = await reviewer(harness, "ann")
    refused = [
        ("POST", "/v1/queues", {"name": "mine"}),
        ("GET", "/v1/queues", None),
        ("GET", f"/v1/queues/{queue['id']}", None),
        ("POST", f"/v1/queues/{queue['id']}/fill", None),
        ("GET", f"/v1/projects/{harness.public_key}/labels", None),
        ("PUT", f"/v1/projects/{harness.public_key}/labels", {"labels": ["x"]}),
        ("GET", "/v1/exports/evals", None),
        ("GET", "/v1/exports/preferences?format=trl", None),
        ("GET", "/v1/traces/t0", None),
        ("POST", "/v1/traces", {"trace_id": "x", "session_id": "s"}),
        ("GET", "/v1/destinations", None),
        ("POST", "/v1/destinations", {"kind": "webhook", "url": "https://example.com"}),
        ("GET", "/v1/stats", None),
        ("GET", "/v1/alerts", None),
    ]
    for method, path, body in refused:
        response = await harness.client.request(method, path, json=body, headers=auth(key))
        assert response.status_code in (401, 403, 404), (method, path, response.status_code)
        if response.status_code == 404:  # a route another part of the gateway has not mounted yet
            assert response.json()["type"].endswith("not_found") and "t0" not in path
    response = await harness.send({"type": "shown", "id": str(uuid.uuid4()), "trace_id": "t0", "ts": now_ms(),
                                   "session_id": "s"}, project=key)
    assert response.status_code == 401


async def test_a_revoked_or_unknown_reviewer_key_is_refused(harness):
    await traces(harness, 1)
    queue = await make_queue(harness, sampling={"size": 1, "random_share": 0})
    key = await reviewer(harness, "ann")
    assert await harness.gateway.store.review.revoke_reviewer(await project_id(harness), "ann", now_ms())
    for bad in (key, "rk_unknown"):
        response = await claim(harness, queue["id"], bad)
        assert response.status_code == 401 and response.json()["type"].endswith("unauthorized")
    # The name is free again, with a new key.
    assert (await claim(harness, queue["id"], await reviewer(harness, "ann"))).status_code == 204


async def test_a_reviewer_name_is_one_live_key_per_project(harness):
    await reviewer(harness, "ann")
    assert await harness.gateway.store.review.add_reviewer(await project_id(harness), "ann", now_ms()) is None


async def test_another_projects_queue_is_not_found(harness):
    queue = await make_queue(harness)
    other, secret = await harness.gateway.store.create_project(name="other", origins=[ORIGIN])
    response = await harness.client.get(f"/v1/queues/{queue['id']}", headers=auth(secret))
    assert response.status_code == 404
    key = await harness.gateway.store.review.add_reviewer(other.id, "ann", now_ms())
    assert (await claim(harness, queue["id"], key)).status_code == 404


@pytest.mark.parametrize("path", ["/v1/queues/{queue}/items/99999999999999999999999/label",
                                  "/v1/queues/{queue}/items/9223372036854775808/skip"])
async def test_item_ids_past_64_bits_are_not_found(harness, path):
    queue = await make_queue(harness)
    body = {"reviewer": "ann", **({"labels": []} if path.endswith("label") else {})}
    response = await harness.client.post(path.format(queue=queue["id"]), json=body, headers=auth(harness.secret_key))
    assert response.status_code == 404


async def test_the_outlier_rule_follows_its_setting(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), outlier_min_votes=3) as h:
        ids = await traces(h, 3)
        for trace_id in ids:  # three downs from one session: flagged at 3, not at the default 10
            await vote(h, trace_id, "terse", 0)
        queue = await make_queue(h, filter={"vote": "down"}, sampling={"size": 10, "random_share": 0})
        assert (await fill(h, queue["id"]))["added"] == 0
        export = await h.client.get("/v1/exports/preferences?format=trl_unpaired", headers=auth(h.secret_key))
        assert export.text == ""
