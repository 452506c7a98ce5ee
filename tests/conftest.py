from __future__ import annotations

import contextlib
from dataclasses import dataclass

import httpx
import pytest

from gateway.app import create_app
from gateway.core import Gateway
from gateway.settings import Settings
from tests.servers import METRICS_TOKEN

ORIGIN = "https://chat.example.com"


@pytest.fixture
def redis_url(redis_server):
    """A running redis-server, flushed before each test (restarted if an earlier test killed it)."""
    import redis

    if redis_server.proc is None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@dataclass
class Harness:
    """An in-process gateway (lifespan running) with one project and an httpx client."""

    app: object
    client: httpx.AsyncClient
    public_key: str
    secret_key: str
    db: str

    @property
    def gateway(self) -> Gateway:
        return self.app.state.gateway

    async def trace(self, trace_id: str = "trace-1", session_id: str = "session-1", **fields) -> str:
        """Log a trace with the secret key; returns its feedback token."""
        response = await self.client.post(
            "/v1/traces", json={"trace_id": trace_id, "session_id": session_id, **fields},
            headers={"Authorization": f"Bearer {self.secret_key}"},
        )
        assert response.status_code in (200, 201), response.text
        return response.json()["feedback_token"]

    async def send(self, *events: dict, project: str | None = None, origin: str | None = ORIGIN, **kwargs):
        headers = {"Origin": origin} if origin else {}
        headers.update(kwargs.pop("headers", {}))
        return await self.client.post("/v1/events", json={"project": project or self.public_key, "events": list(events)},
                                      headers=headers, **kwargs)

    async def stored(self, trace_id: str = "trace-1") -> dict:
        response = await self.client.get(f"/v1/traces/{trace_id}", headers={"Authorization": f"Bearer {self.secret_key}"})
        assert response.status_code == 200, response.text
        return response.json()


@contextlib.asynccontextmanager
async def running_gateway(db: str, *, require_token: bool = True, **settings):
    app = create_app(Settings.load(environ={}, db=db, **{"metrics_token": METRICS_TOKEN, **settings}))
    async with app.router.lifespan_context(app):
        project, secret = await app.state.gateway.store.create_project(
            name="test", origins=[ORIGIN], require_token=require_token)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield Harness(app, client, project.public_key, secret, db)


@pytest.fixture
async def harness(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db")) as h:
        yield h
