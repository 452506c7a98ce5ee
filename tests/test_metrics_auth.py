"""`/metrics` answers only a scraper holding BACKCHANNEL_METRICS_TOKEN (as a Bearer token), and is off without one."""

from __future__ import annotations

import pytest

from tests.conftest import running_gateway

TOKEN = "metrics-token-for-the-test-0123456789"


@pytest.fixture
async def gateway(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), metrics_token=TOKEN) as h:
        yield h


async def test_the_token_scrapes(gateway):
    response = await gateway.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "backchannel_events_total" in response.text


@pytest.mark.parametrize("authorization", [None, "", "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                                           f"Basic {TOKEN}", f"bearer  {TOKEN} extra", "Bearer sk_whatever",
                                           "Bearer é".encode()])
async def test_anything_else_is_refused_and_shows_nothing(gateway, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await gateway.client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert response.json()["type"] == "urn:backchannel:problem:unauthorized"
    assert "backchannel_" not in response.text


async def test_a_project_secret_key_does_not_scrape(gateway):
    response = await gateway.client.get("/metrics", headers={"Authorization": f"Bearer {gateway.secret_key}"})
    assert response.status_code == 401


async def test_without_a_token_metrics_are_off(tmp_path):
    async with running_gateway(str(tmp_path / "bc.db"), metrics_token="") as h:
        response = await h.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 404
        assert "BACKCHANNEL_METRICS_TOKEN" in response.json()["detail"]


def test_a_short_token_stops_the_gateway_at_start(tmp_path):
    from gateway.app import create_app
    from gateway.settings import Settings

    with pytest.raises(ValueError, match="BACKCHANNEL_METRICS_TOKEN"):
        create_app(Settings.load(environ={}, db=str(tmp_path / "bc.db"), metrics_token="short"))
