"""De-duplication (`gateway/dedup.py`): in the batch, the Redis fast path, the store's verdict, remember after commit."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio

from gateway.dedup import KEY_PREFIX, Dedup
from gateway.store import EventRow
from tests.conftest import running_gateway
from tests.events import event
from tests.servers import METRICS_AUTH


def rows(*ids: uuid.UUID) -> list[EventRow]:
    return [EventRow(i, "t", "s", "shown", None, None, None, None, 1, "h") for i in ids]


A, B, C = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


@pytest.mark.parametrize("ids, repeats", [
    ((), []), ((A,), []), ((A, B, C), []), ((A, A), [1]), ((A, B, A, A, B, C), [2, 3, 4]),
    ((A, uuid.UUID(str(A).upper())), [1]),  # one UUID however it was written
])
def test_repeats_in_a_batch(ids, repeats):
    assert Dedup.repeats(rows(*ids)) == repeats


def test_known_keys():
    assert Dedup.known(["a", "b", "c"], frozenset({"c", "a"})) == [0, 2]
    assert Dedup.known(["a"], frozenset()) == []


def commits(text: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith("backchannel_commit_batch_events_count")))


@pytest.mark.redis
async def test_a_committed_id_is_answered_from_redis_without_a_commit(tmp_path, redis_url):
    async with running_gateway(str(tmp_path / "bc.db"), redis=redis_url, seen_ttl=120) as harness:
        token = await harness.trace()
        one = event(token=token)
        assert (await harness.send(one)).json()["results"][0]["status"] == "accepted"
        project = await harness.gateway.store.project_by_public_key(harness.public_key)
        key = f"{KEY_PREFIX}{project.id}:{one['id']}"
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            for _ in range(200):  # remembered after the commit, in the background
                if await client.exists(key):
                    break
                await asyncio.sleep(0.01)
            assert 110 <= await client.ttl(key) <= 120  # BACKCHANNEL_SEEN_TTL
        finally:
            await client.aclose()
        before = commits((await harness.client.get("/metrics", headers=METRICS_AUTH)).text)
        again = await harness.send(one)
        assert again.json()["results"] == [{"id": one["id"], "status": "duplicate"}]
        assert commits((await harness.client.get("/metrics", headers=METRICS_AUTH)).text) == before  # the store was not asked
        mixed = await harness.send(one, event(token=token))
        assert [r["status"] for r in mixed.json()["results"]] == ["duplicate", "accepted"]
        assert len((await harness.stored())["events"]) == 2


async def test_without_redis_the_store_answers_duplicates(harness):
    token = await harness.trace()
    one = event(token=token)
    await harness.send(one)
    assert harness.gateway.dedup.keys(await harness.gateway.store.project_by_public_key(harness.public_key),
                                      rows(uuid.UUID(one["id"]))) == []
    assert (await harness.send(one)).json()["results"][0]["status"] == "duplicate"
