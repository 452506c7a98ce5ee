"""Daily IP salts: one per UTC day, shared through the store, deleted when the day is over; a stored hash of a finished
day cannot be recomputed from the database alone."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx

from gateway.clientip import hash_ip
from gateway.store import salts, tables
from tests.conftest import ORIGIN, running_gateway
from tests.events import event

CLIENT = "203.0.113.7"
DAY = 40_000  # after the real today, which the gateway salted at start


def every_text(db: str) -> set[str]:
    """Every text value in every table of the database: what someone holding the file could try as a salt."""
    with sqlite3.connect(db) as conn:
        tables_ = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {value for table in tables_ for row in conn.execute(f"SELECT * FROM {table}") for value in row
                if isinstance(value, str)}


def test_a_day_has_one_salt_and_a_finished_day_none(tmp_path):
    conn = tables.connect(str(tmp_path / "bc.db"))
    with tables.transaction(conn):
        first = salts.salt_of_day(conn, DAY)
    with tables.transaction(conn):
        assert salts.salt_of_day(conn, DAY) == first  # another replica on the same day reads the same salt
    with tables.transaction(conn):
        second = salts.salt_of_day(conn, DAY + 1)
    assert second != first and len(second) == 64
    assert first not in every_text(str(tmp_path / "bc.db"))
    with tables.transaction(conn):  # a replica whose clock is behind does not bring the deleted day back
        assert salts.salt_of_day(conn, DAY) == second
    assert conn.execute("SELECT day FROM ip_salts").fetchall() == [(DAY + 1,)]


def test_the_salt_kept_beside_the_hashes_before_daily_salts_is_deleted(tmp_path):
    conn = tables.connect(str(tmp_path / "bc.db"))
    with tables.transaction(conn):
        tables.meta(conn, "ip_salt", "the old single salt")
        salts.salt_of_day(conn, DAY)
    assert "the old single salt" not in every_text(str(tmp_path / "bc.db"))


async def send(h, token: str) -> None:
    """One event from CLIENT, accepted."""
    transport = httpx.ASGITransport(app=h.app, client=(CLIENT, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        response = await client.post("/v1/events", json={"project": h.public_key, "events": [event(token=token)]},
                                     headers={"Origin": ORIGIN})
    assert response.json()["results"][0]["status"] == "accepted", response.text


def stored(db: str, day: int) -> tuple[str, str]:
    """The first event's ip_hash, and the salt of `day` in the store."""
    with sqlite3.connect(db) as conn:
        (ip_hash,) = conn.execute("SELECT ip_hash FROM events ORDER BY seq").fetchone()
    return ip_hash, stored_salt(db, day)


async def test_after_the_day_rolls_over_a_stored_hash_cannot_be_recomputed_from_the_database(tmp_path):
    db = str(tmp_path / "bc.db")
    async with running_gateway(db) as h:
        day = [DAY]
        h.gateway.today = lambda: day[0]  # the gateway's clock, in days
        token = await h.trace()
        await send(h, token)
        ip_hash, salt = stored(db, DAY)
        # While the day lasts, its salt is in the store (every replica needs it) and the hash is the day's.
        assert ip_hash == hash_ip(CLIENT, salt, DAY)

        day[0] = DAY + 1
        await send(h, token)
        with sqlite3.connect(db) as conn:
            hashes = [row[0] for row in conn.execute("SELECT ip_hash FROM events ORDER BY seq")]
        assert hashes[0] == ip_hash and hashes[1] != ip_hash  # the same client, unlinkable across days

    assert salt not in every_text(db)
    candidates = every_text(db)
    assert not any(hash_ip(CLIENT, candidate, d) == ip_hash for candidate in candidates | {""} for d in (DAY, DAY + 1))


async def test_a_pepper_outside_the_database_is_needed_too(tmp_path):
    db = str(tmp_path / "bc.db")
    async with running_gateway(db, ip_salt="a pepper kept out of the database") as h:
        h.gateway.today = lambda: DAY
        await send(h, await h.trace())
        ip_hash, salt = stored(db, DAY)
        # Even during its day, the database alone does not give the hash: the pepper is in the settings only.
        assert ip_hash != hash_ip(CLIENT, salt, DAY)
        assert ip_hash == hash_ip(CLIENT, "a pepper kept out of the database" + salt, DAY)


async def test_no_limiter_key_holds_the_client_address(tmp_path):
    # The events route and the pages' sign-in both charge the client: by its day's hash, never its address (with
    # Redis, limiter keys are visible to whoever can read Redis).
    async with running_gateway(str(tmp_path / "bc.db")) as h:
        await send(h, await h.trace())
        transport = httpx.ASGITransport(app=h.app, client=(CLIENT, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            for page in ("/dashboard", "/review"):
                response = await client.post(f"{page}/sign-in", data={"key": "sk_wrong"},
                                             headers={"Origin": "http://gateway.test"})
                assert response.status_code < 500
        keys = list(h.gateway.limiter._tat_us)  # the in-process limiter's buckets
        assert any(key.startswith("sign-in:") for key in keys) and any(key.startswith("ip:") for key in keys)
        assert not [key for key in keys if CLIENT in key]


async def test_a_finished_days_salt_is_deleted_at_midnight_without_any_request(tmp_path, monkeypatch):
    from gateway import core

    midnight, waits = asyncio.Event(), []

    async def sleep(seconds: float) -> None:  # the daily roller's sleep: the first ends when the test says midnight
        waits.append(seconds)
        await (midnight.wait() if len(waits) == 1 else asyncio.Event().wait())

    monkeypatch.setattr(core, "sleep", sleep)
    db = str(tmp_path / "bc.db")
    async with running_gateway(db) as h:
        day = [DAY]
        h.gateway.today = lambda: day[0]
        await h.gateway.roll_salt(DAY)
        salt = stored_salt(db, DAY)
        day[0] = DAY + 1
        midnight.set()
        for _ in range(500):
            if h.gateway.salt_day == DAY + 1:
                break
            await asyncio.sleep(0.01)
        assert h.gateway.salt_day == DAY + 1
        assert salt not in every_text(db)
    assert 0 < waits[0] <= 86_401 and len(waits) == 2


def stored_salt(db: str, day: int) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT salt FROM ip_salts WHERE day = ?", (day,)).fetchone()[0]
