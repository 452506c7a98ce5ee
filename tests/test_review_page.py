"""The reviewer page over HTTP: sign-in with a reviewer key, the queue list and page, and its cookie-authorized API
(the browser's keyboard flow is e2e/test_review.py)."""

from __future__ import annotations

import re

from tests.conftest import Harness
from tests.test_queues import filled_queue, make_queue, reviewer

BASE = "http://gateway.test"
SAME_ORIGIN = {"Origin": BASE}


async def sign_in(h: Harness, key: str) -> None:
    response = await h.client.post("/review/sign-in", data={"key": key}, headers=SAME_ORIGIN)
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/review" in cookie
    assert key not in cookie


async def test_signed_out_is_the_sign_in_form_and_a_secret_key_does_not_sign_in(harness):
    page = await harness.client.get("/review")
    assert page.status_code == 200 and "Reviewer key" in page.text and 'action="/review/sign-in"' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    response = await harness.client.post("/review/sign-in", data={"key": harness.secret_key}, headers=SAME_ORIGIN)
    assert response.status_code == 400  # not an rk_ key
    response = await harness.client.post("/review/sign-in", data={"key": "rk_unknown"}, headers=SAME_ORIGIN)
    assert response.status_code == 401 and "Unknown or revoked reviewer key." in response.text


async def test_the_queue_list_and_a_queue_page(harness):
    queue = await make_queue(harness, instructions="Mark <b>every</b> made-up fact.")
    await sign_in(harness, await reviewer(harness, "ann"))
    listing = await harness.client.get("/review")
    assert listing.status_code == 200 and f'href="?queue={queue["id"]}"' in listing.text
    assert "Reviewer ann" in listing.text
    page = await harness.client.get(f"/review?queue={queue['id']}")
    assert page.status_code == 200
    assert "Mark &lt;b&gt;every&lt;/b&gt; made-up fact." in page.text  # escaped, never markup
    assert f'data-api="/review/api/queues/{queue["id"]}"' in page.text
    labels = re.findall(r'name="labels" value="([a-z_]+)"', page.text)
    assert labels[:2] == ["factual_error", "missed_instructions"] and len(labels) == 7
    for key in ("<kbd>1</kbd>", "<kbd>n</kbd>", "<kbd>Enter</kbd>", "<kbd>s</kbd>"):
        assert key in page.text
    assert (await harness.client.get("/review?queue=q_nope")).status_code == 404


async def test_the_page_api_works_by_cookie_from_the_page_only(harness):
    queue = await filled_queue(harness, 2)
    api = f"/review/api/queues/{queue['id']}"
    refused = await harness.client.post(f"{api}/claim", json={}, headers=SAME_ORIGIN)
    assert refused.status_code == 401  # no cookie
    await sign_in(harness, await reviewer(harness, "ann"))
    assert (await harness.client.post(f"{api}/claim", json={})).status_code == 403  # no Origin: not from the page
    response = await harness.client.post(f"{api}/claim", json={}, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    claimed = (await harness.client.post(f"{api}/claim", json={}, headers=SAME_ORIGIN)).json()
    response = await harness.client.post(f"{api}/items/{claimed['item_id']}/label", headers=SAME_ORIGIN,
                                         json={"labels": ["tone"], "note": "curt"})
    assert response.status_code == 200 and response.json()["status"] == "labeled"
    response = await harness.client.post(f"{api}/items/{claimed['item_id']}/label", headers=SAME_ORIGIN,
                                         json={"labels": ["tone"], "reviewer": "bob"})
    assert response.status_code == 403  # a page signed in as ann acts as ann only
    second = (await harness.client.post(f"{api}/claim", json={}, headers=SAME_ORIGIN)).json()
    response = await harness.client.post(f"{api}/items/{second['item_id']}/skip", headers=SAME_ORIGIN, json={})
    assert response.status_code == 200 and response.json()["status"] == "skipped"
    assert (await harness.client.post(f"{api}/claim", json={}, headers=SAME_ORIGIN)).status_code == 204


async def test_revoking_the_reviewer_signs_the_page_out(harness):
    key = await reviewer(harness, "ann")
    await sign_in(harness, key)
    assert "Queues" in (await harness.client.get("/review")).text
    project = await harness.gateway.store.project_by_public_key(harness.public_key)
    await harness.gateway.store.review.revoke_reviewer(project.id, "ann", 0)
    page = await harness.client.get("/review")
    assert "Reviewer key" in page.text and "Queues" not in page.text
