"""The dashboard: session cookies, sign-in and sign-out, the page from generated stats, and a real Chromium.

The app under test is `dashboard_routes` mounted in a tiny Starlette app whose callables serve generated data with a
known truth (`Provider`): the same shapes `/v1/stats` and `/v1/alerts` answer.
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from gateway.analytics.intervals import wilson
from gateway.analytics.rates import IMPLICIT_SIGNALS
from gateway.errors import HTTPProblem
from gateway.pages import dashboard
from gateway.pages.dashboard import Filters, dashboard_context, render_dashboard
from gateway.pages.routes import dashboard_routes
from gateway.pages.session import Principal, Sessions
from gateway.pages.static import assets, static_url
from tests.servers import free_port, wait_for

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SECRET = "sk_live_0123456789abcdef"
REVIEWER = "rk_reviewer_0123456789"
COOKIE_KEY = b"k" * 32
HOSTILE_MODEL = '<script>alert("model")</script>'
NOW = datetime(2026, 11, 30, 12, 30, tzinfo=timezone.utc).timestamp()
DAY = 86400

# True rates of the generated history; model-b's thumbs-down and regenerate rates rise half-way through the range.
BASE_RATES = {"feedback_up": 0.02, "feedback_down": 0.09, "copied": 0.3, "edited": 0.05, "regenerated": 0.08,
              "rephrased": 0.04, "abandoned": 0.06, "accepted": 0.1}
REGRESSION = {"feedback_down": 0.14, "regenerated": 0.13}
REASONS = {"too_long": 0.5, "wrong_information": 0.3, "<b>other</b>": 0.2}


def _iso_hour(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:00:00Z")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Provider:
    """Generated stats and alerts, and the keys that sign in; records what the page asked for."""

    models: tuple[str, ...] = ("model-a", "model-b")
    templates: tuple[str, ...] = ("answer", "summarize", "draft")
    per_hour: int = 40
    switch_at: float = NOW - 7 * DAY
    revoked: set[str] = field(default_factory=set)
    queries: list[dict[str, str]] = field(default_factory=list)
    problem: str = ""

    async def authenticate(self, key: str) -> Principal | None:
        found = {SECRET: Principal("secret", 7, "kid_secret"), REVIEWER: Principal("reviewer", 7, "kid_reviewer")}
        principal = found.get(key)
        return principal if principal and principal.key_id not in self.revoked else None

    async def is_live(self, principal: Principal) -> bool:
        return principal.key_id not in self.revoked

    def hour(self, model: str, template: str, t: float) -> dict[str, Any]:
        """One group-hour: its impressions and per-signal counts, the same whenever asked (seeded by its key)."""
        rng = random.Random(f"{model}|{template}|{int(t)}")
        shown = self.per_hour + rng.randint(-self.per_hour // 6, self.per_hour // 6)
        late = model == "model-b" and t >= self.switch_at
        counts = {name: sum(rng.random() < (REGRESSION.get(name, p) if late else p) for _ in range(shown))
                  for name, p in BASE_RATES.items()}
        counts["feedback_any"] = counts["feedback_up"] + counts["feedback_down"]
        counts["implicit_any"] = min(shown, counts["copied"] + counts["regenerated"])
        reasons = {code: round(counts["feedback_down"] * share) for code, share in REASONS.items()}
        return {"shown": shown, "counts": counts, "reasons": reasons}

    def stats(self, query: Mapping[str, str]) -> dict[str, Any]:
        start, end = _parse(query["from"]), _parse(query["to"])
        bucket = query["group_by"].split(",")[-1]
        groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        t = start
        while t < end:
            when = _iso_hour(t) if bucket == "hour" else _iso_hour(t)[:10]
            for model in self.models:
                if query.get("model") not in (None, model):
                    continue
                for template in self.templates:
                    if query.get("template") not in (None, template):
                        continue
                    cell = self.hour(model, template, t)
                    group = groups.setdefault((model, template, when), {"shown": 0, "counts": {}, "reasons": {}})
                    group["shown"] += cell["shown"]
                    for part in ("counts", "reasons"):
                        for name, n in cell[part].items():
                            group[part][name] = group[part].get(name, 0) + n
            t += 3600
        return {"groups": [
            {"key": {"model": m, "template": tp, bucket: when}, "shown": g["shown"],
             "signals": {name: {"count": n, "rate": n / g["shown"], "ci": list(wilson(n, g["shown"]))}
                         for name, n in g["counts"].items()},
             "reasons": g["reasons"]}
            for (m, tp, when), g in groups.items()], "flagged_sessions": 3, "from": query["from"], "to": query["to"]}

    async def fetch_stats(self, project_id: int, query: dict[str, str]) -> dict[str, Any]:
        assert project_id == 7
        self.queries.append(query)
        if self.problem:
            raise HTTPProblem("malformed", self.problem)
        return self.stats(query)

    async def fetch_alerts(self, project_id: int, query: dict[str, str]) -> dict[str, Any]:
        assert query == {"state": "all"}
        return {"alerts": [
            {"id": "al_1", "key": {"model": "model-b", "template": "answer"}, "signal": "feedback_down",
             "direction": "worse", "baseline": {"shown": 6000, "count": 540, "rate": 0.09},
             "recent": {"shown": 2100, "count": 290, "rate": 0.138}, "detected_at": _iso_hour(self.switch_at + DAY),
             "state": "open", "method": "cusum"},
            {"id": "al_2", "key": {"model": HOSTILE_MODEL}, "signal": "regenerated", "direction": "worse",
             "baseline": {"shown": 100, "count": 8, "rate": 0.08}, "recent": {"shown": 100, "count": 15, "rate": 0.15},
             "detected_at": _iso_hour(NOW - 3 * DAY), "state": "resolved", "method": "cusum"},
            {"id": "al_old", "key": {}, "signal": "copied", "direction": "worse",
             "baseline": {"shown": 1, "count": 1, "rate": 1}, "recent": {"shown": 1, "count": 0, "rate": 0},
             "detected_at": _iso_hour(NOW - 200 * DAY), "state": "resolved", "method": "cusum"},
        ]}

    def app(self, **kwargs: Any) -> Starlette:
        return Starlette(routes=dashboard_routes(
            authenticate=self.authenticate, is_live=self.is_live, fetch_stats=self.fetch_stats,
            fetch_alerts=self.fetch_alerts, cookie_key=lambda: COOKIE_KEY, clock=lambda: NOW, **kwargs))


@pytest.fixture
def provider() -> Provider:
    return Provider()


@pytest.fixture
async def client(provider):
    transport = httpx.ASGITransport(app=provider.app(), client=("198.51.100.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as client:
        yield client


ORIGIN = {"Origin": "http://dash.test"}


async def sign_in(client: httpx.AsyncClient, key: str = SECRET, headers: Mapping[str, str] = ORIGIN) -> httpx.Response:
    return await client.post("/dashboard/sign-in", data={"key": key}, headers=dict(headers))


# --- session cookies ------------------------------------------------------------------------------------------------

def sessions(clock: list[float], revoked: set[str] | None = None, key: bytes = COOKIE_KEY) -> Sessions:
    async def is_live(principal: Principal) -> bool:
        return principal.key_id not in (revoked or set())
    return Sessions(key, is_live=is_live, name="bc_dashboard", path="/dashboard", ttl=3600, clock=lambda: clock[0])


async def test_session_round_trip_and_expiry():
    clock = [1000.0]
    s = sessions(clock)
    principal = Principal("secret", 7, "kid_1")
    value = s.issue(principal)
    assert await s.verify(value) == principal
    assert await s.verify(value, kinds=("reviewer",)) is None
    clock[0] = 1000 + 3599
    assert await s.verify(value) == principal
    clock[0] = 1000 + 3600
    assert await s.verify(value) is None


async def test_session_never_carries_the_secret_and_rejects_tampering():
    clock = [1000.0]
    s = sessions(clock)
    value = s.issue(Principal("secret", 7, "kid_1"))
    assert SECRET not in value and "sk_" not in value
    body, mac = value.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["p"] = 8  # another project
    other = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    for bad in (f"{other}.{mac}", f"{body}.{flipped}", body, f"{body}.", f".{mac}", f"{body}.{mac}.x", "",
                f"{body}.{mac}é", "x" * 5000, None):
        assert await s.verify(bad) is None, bad
    assert await sessions(clock, key=b"another key, 32 bytes long......").verify(value) is None


async def test_a_revoked_key_signs_its_sessions_out():
    revoked: set[str] = set()
    s = sessions([1000.0], revoked)
    value = s.issue(Principal("secret", 7, "kid_1"))
    assert await s.verify(value) is not None
    revoked.add("kid_1")
    assert await s.verify(value) is None


def test_session_key_must_be_long_enough():
    with pytest.raises(ValueError):
        Sessions(b"short", is_live=lambda p: None, name="n", path="/")  # type: ignore[arg-type,return-value]


# --- sign-in and sign-out -------------------------------------------------------------------------------------------

async def test_signed_out_dashboard_is_the_sign_in_form(client):
    r = await client.get("/dashboard")
    assert r.status_code == 200
    assert '<label for="key">Secret key</label>' in r.text
    assert re.search(r'<input id="key" name="key" type="password"', r.text)
    assert 'action="/dashboard/sign-in"' in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"


async def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_clears_it(client, provider):
    r = await sign_in(client)
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("bc_dashboard=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie
    assert SECRET not in cookie
    page = await client.get("/dashboard")
    assert page.status_code == 200 and "Feedback dashboard" in page.text and "Sign out" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")

    out = await client.post("/dashboard/sign-out", headers=ORIGIN)
    assert out.status_code == 303
    assert "bc_dashboard=" in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    assert "Secret key" in (await client.get("/dashboard")).text


async def test_cookie_is_secure_over_https(provider):
    transport = httpx.ASGITransport(app=provider.app())
    async with httpx.AsyncClient(transport=transport, base_url="https://dash.test") as client:
        r = await sign_in(client, headers={"Origin": "https://dash.test"})
        assert r.status_code == 303
        assert "Secure" in r.headers["set-cookie"]


async def test_revoking_the_key_signs_the_dashboard_out(client, provider):
    await sign_in(client)
    assert "Feedback dashboard" in (await client.get("/dashboard")).text
    provider.revoked.add("kid_secret")
    r = await client.get("/dashboard")
    assert r.status_code == 200 and "Secret key" in r.text and "Feedback dashboard" not in r.text
    assert "Max-Age=0" in r.headers["set-cookie"]  # the dead cookie is dropped


@pytest.mark.parametrize("key, status, message", [
    ("", 400, "Enter the secret key."),
    ("pk_public", 400, "That is not a secret key: it starts with sk_."),
    ("sk_" + "x" * 300, 400, "That is not a secret key"),
    ("sk_unknown", 401, "Unknown or revoked secret key."),
    (REVIEWER, 400, "That is not a secret key"),
])
async def test_bad_keys_are_shown_inline(client, key, status, message):
    r = await sign_in(client, key)
    assert r.status_code == status
    assert message in r.text
    assert 'aria-invalid="true"' in r.text and 'aria-describedby="key-hint key-error"' in r.text
    assert 'id="key-error" role="alert"' in r.text
    assert "set-cookie" not in r.headers


async def test_a_reviewer_key_does_not_open_the_dashboard(provider, client):
    s = Sessions(COOKIE_KEY, is_live=provider.is_live, name="bc_dashboard", path="/dashboard")
    client.cookies.set("bc_dashboard", s.issue(Principal("reviewer", 7, "kid_reviewer")))
    assert "Secret key" in (await client.get("/dashboard")).text


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://evil.test"}, {"Origin": "null"},
                                     {"Referer": "http://evil.test/dashboard"}, {"Origin": "ftp://dash.test"}])
async def test_forms_from_another_origin_are_refused(client, headers):
    for path in ("/dashboard/sign-in", "/dashboard/sign-out"):
        r = await client.post(path, data={"key": SECRET}, headers=headers)
        assert r.status_code == 403, (path, headers)
        assert "set-cookie" not in r.headers
        assert "Form refused" in r.text


async def test_same_origin_referer_is_enough_without_origin(client):
    r = await client.post("/dashboard/sign-in", data={"key": SECRET}, headers={"Referer": "http://dash.test/dashboard"})
    assert r.status_code == 303


@pytest.mark.parametrize("content, content_type", [
    (b'{"key": "sk_live_0123456789abcdef"}', "application/json"),
    (b"key=" + b"a" * 5000, "application/x-www-form-urlencoded"),
    (b"key=\xff\xfe", "application/x-www-form-urlencoded"),
    (b"&".join(b"f%d=1" % i for i in range(20)), "application/x-www-form-urlencoded"),
    (b"", "multipart/form-data; boundary=x"),
])
async def test_unreadable_forms_answer_400_inline(client, content, content_type):
    r = await client.post("/dashboard/sign-in", content=content, headers={**ORIGIN, "Content-Type": content_type})
    assert r.status_code == 400
    assert 'aria-invalid="true"' in r.text


async def test_sign_in_attempts_are_rate_limited(client):
    for _ in range(10):
        assert (await sign_in(client, "sk_wrong")).status_code == 401
    r = await sign_in(client, SECRET)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert "Too many attempts" in r.text and 'aria-invalid="true"' in r.text


# --- the page -------------------------------------------------------------------------------------------------------

async def test_page_asks_for_hours_up_to_seven_days_and_days_beyond(client, provider):
    await sign_in(client)
    for range_, bucket in (("24h", "hour"), ("7d", "hour"), ("14d", "day"), ("30d", "day")):
        r = await client.get("/dashboard", params={"range": range_, "model": "model-b", "template": "answer"})
        assert r.status_code == 200
        query = provider.queries[-1]
        assert query["group_by"] == f"model,template,{bucket}"
        assert (query["model"], query["template"], query["include_flagged"]) == ("model-b", "answer", "false")
        assert _parse(query["to"]) - _parse(query["from"]) == dashboard.RANGES[range_][1]
        assert _parse(query["from"]) <= NOW < _parse(query["to"])


async def test_page_shows_charts_alerts_coverage_reasons_and_flagged(client):
    await sign_in(client)
    r = await client.get("/dashboard", params={"range": "14d"})
    page = r.text
    # one rate chart per signal, plus coverage and reasons; each an image with a label saying what it shows
    labels = re.findall(r'<svg [^>]*role="img" aria-label="([^"]*)"', page)
    assert len(labels) == len(dashboard.SIGNALS) + 2
    # every model-b line regresses (true rates 9% then 14%); whichever moved most is named
    assert re.fullmatch(r"Thumbs-down rate per model and template, 17–30 Nov 2026: largest change: "
                        r"model-b · \w+ rose from [89]\.\d% to 1[345]\.\d%; 1 alert marked", labels[0]), labels[0]
    assert "1 alert marked" in labels[0]
    assert any(label.startswith("Explicit vs implicit coverage") for label in labels)
    assert any(label.startswith("Thumbs-down reasons") and "too_long" in label for label in labels)
    # alerts: the open one first, the resolved one in range, not the one from 200 days ago
    rows = re.findall(r'<tr class="state-(\w+)">\s*<th scope="row">(A\d)</th>\s*<td>([^<]*)</td>', page)
    assert rows == [("open", "A1", "model-b · answer"),
                    ("resolved", "A2", "&lt;script&gt;alert(&#34;model&#34;)&lt;/script&gt;")]
    assert "14.0%" in page and "9.0%" in page  # the open alert's recent and baseline rates
    assert '<dt>Flagged sessions</dt><dd>3 ' in page
    assert '<dt>Open alerts</dt><dd>1</dd>' in page


async def test_client_supplied_names_are_escaped_everywhere(provider, client):
    provider.models = ("model-a", HOSTILE_MODEL)
    await sign_in(client)
    page = (await client.get("/dashboard")).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#34;model&#34;)&lt;/script&gt;" in page  # Jinja's escaping (filter options)
    assert "&lt;script&gt;alert(&quot;model&quot;)&lt;/script&gt;" in page  # the charts' escaping (labels, tables)
    assert "<b>other</b>" not in page and "&lt;b&gt;other&lt;/b&gt;" in page  # a reason code


@pytest.mark.parametrize("params, field", [
    ({"range": "1y"}, "range"),
    ({"range": "<script>"}, "range"),
    ({"end": "yesterday"}, "end"),
    ({"end": "2026-02-30"}, "end"),
    ({"end": "9999-12-31"}, "end"),
    ({"end": "0001-01-01"}, "end"),
    ({"signal": "nope"}, "signal"),
    ({"model": "m" * 500}, "model"),
    ({"template": "t" * 201}, "template"),
])
async def test_bad_filters_answer_400_inline_with_the_defaults_shown(client, params, field):
    await sign_in(client)
    r = await client.get("/dashboard", params=params)
    assert r.status_code == 400
    assert f'aria-invalid="true" aria-describedby="{field}-error"' in r.text
    assert f'<p class="error" id="{field}-error">' in r.text
    assert "<script>" not in r.text
    assert "role=\"img\"" in r.text  # the rest of the page still works


async def test_odd_but_valid_filters_work(client):
    await sign_in(client)
    for params in ({"end": "2026-11-20", "range": "30d"}, {"model": "nobody"}, {"signal": "copied"},
                   {"include_flagged": "true", "range": "24h"}, {"range": ""}, {"range": ["7d", "30d"]}):
        r = await client.get("/dashboard", params=params)
        assert r.status_code == 200, params


async def test_a_refused_stats_query_is_shown_not_raised(client, provider):
    provider.problem = "from must be before to"
    await sign_in(client)
    r = await client.get("/dashboard")
    assert r.status_code == 400
    assert '<p class="problem" role="alert">from must be before to</p>' in r.text


async def test_page_is_gzipped_for_clients_that_accept_it(client):
    await sign_in(client)
    r = await client.get("/dashboard", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert "Feedback dashboard" in r.text  # httpx decoded it


def test_hourly_stats_for_a_long_range_are_summed_into_days_exactly(provider):
    filters, _ = Filters.parse({"range": "30d", "model": "model-b", "template": "answer", "signal": "feedback_down"})
    start, end = filters.window(NOW)
    hourly = provider.stats({"from": iso(start), "to": iso(end),
                             "group_by": "model,template,hour", "model": "model-b", "template": "answer"})
    table = dashboard_context(hourly, {}, filters, now=NOW)["rate_charts"][0]["table"]
    rows = re.findall(r'<tr><th scope="row">([\d-]+)</th><td>([\d.]+)% .*?<span class="n">(\d+)/(\d+)</span>', table)
    assert len(rows) == 30
    for day, rate, count, shown in rows:
        day_start = _parse(day + "T00:00:00Z")
        cells = [provider.hour("model-b", "answer", day_start + h * 3600) for h in range(24)]
        assert int(shown) == sum(c["shown"] for c in cells)  # hand count
        assert int(count) == sum(c["counts"]["feedback_down"] for c in cells)
        assert float(rate) == pytest.approx(int(count) / int(shown) * 100, abs=0.05)
    svg = dashboard_context(hourly, {}, filters, now=NOW)["rate_charts"][0]["svg"]
    line = re.search(r'<path class="line [^"]*" d="M([^"]*)"', svg)
    assert line and len(line.group(1).split()) == 30  # one point per day, not 720 per hour


def test_thirty_days_hourly_across_twelve_groups_renders_quickly():
    provider = Provider(models=("model-a", "model-b", "model-c"), templates=("answer", "summarize", "draft", "code"),
                        per_hour=12)
    filters, _ = Filters.parse({"range": "30d"})
    start, end = filters.window(NOW)
    hourly = provider.stats({"from": iso(start), "to": iso(end),
                             "group_by": "model,template,hour"})
    assert len(hourly["groups"]) == 30 * 24 * 12
    began = time.perf_counter()
    page = render_dashboard(hourly, {}, filters, now=NOW)
    assert time.perf_counter() - began < 2.0  # ~0.3 s on the 2-core test machine; generous for shared CPUs
    assert "5 other groups" in page  # MAX_SERIES lines: 7 biggest groups and one summing the other 5


def test_names_with_the_label_separator_or_missing_keys_render():
    provider = Provider(models=("a · b", "c"), templates=("x · y",), per_hour=5)
    filters, _ = Filters.parse({"range": "24h"})
    start, end = filters.window(NOW)
    stats = provider.stats({"from": iso(start), "to": iso(end),
                            "group_by": "model,template,hour"})
    stats["groups"][0]["key"] = {"hour": stats["groups"][0]["key"]["hour"]}  # a trace without model and template
    page = render_dashboard(stats, {"alerts": [{"key": {}, "signal": "feedback_down", "state": "open"}]}, filters,
                            now=NOW)
    assert "a · b · x · y" in page and "(none) · (none)" in page
    assert "whole project" in page


def test_coverage_is_a_lower_bound_without_implicit_any(provider):
    filters, _ = Filters.parse({"range": "24h"})
    start, end = filters.window(NOW)
    stats = provider.stats({"from": iso(start), "to": iso(end),
                            "group_by": "model,template,hour"})
    with_any = dashboard_context(stats, {}, filters, now=NOW)
    assert not with_any["coverage_lower_bound"] and "at least" not in with_any["coverage_svg"]
    exact = sum(g["signals"]["implicit_any"]["count"] for g in stats["groups"])
    assert with_any["tiles"]["implicit"] == f"{exact / sum(g['shown'] for g in stats['groups']) * 100:.1f}%"
    for group in stats["groups"]:
        del group["signals"]["implicit_any"]
    without = dashboard_context(stats, {}, filters, now=NOW)
    assert without["coverage_lower_bound"] and "implicit at least" in without["coverage_svg"]
    # hand count: per group (model, template, hour) the largest implicit signal's count, summed
    bound = sum(max(g["signals"][name]["count"] for name in IMPLICIT_SIGNALS) for g in stats["groups"])
    shown = sum(g["shown"] for g in stats["groups"])
    assert without["tiles"]["implicit"] == "≥ " + f"{bound / shown * 100:.1f}%"


def test_empty_stats_render_a_page_that_says_so():
    filters, _ = Filters.parse({})
    page = render_dashboard({"groups": [], "flagged_sessions": 0}, {"alerts": []}, filters, now=NOW)
    assert page.count("No impressions in this range") >= len(dashboard.SIGNALS)
    assert "No alerts for these filters." in page
    assert "No thumbs-down reasons in this range" in page


# --- static files ---------------------------------------------------------------------------------------------------

async def test_static_files_have_hashed_names_long_cache_and_etags(client):
    url = static_url("pages.css")
    assert re.fullmatch(r"/dashboard/static/pages\.[0-9a-f]{10}\.css", url)
    r = await client.get(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    again = await client.get(url, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    plain = await client.get("/dashboard/static/pages.css")
    assert plain.status_code == 200 and plain.headers["cache-control"] == "no-cache"
    for missing in ("/dashboard/static/nope.css", "/dashboard/static/..%2Froutes.py", "/dashboard/static/"):
        assert (await client.get(missing)).status_code == 404
    assert {a.name for a in assets().values()} == {"pages.css", "theme.js", "review.css", "review.js"}


# --- in a real Chromium ---------------------------------------------------------------------------------------------

class Site:
    """The test app served by a real uvicorn in a thread."""

    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", ws="none"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Site:
        self.thread.start()
        wait_for(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def site(provider):
    with Site(provider.app()) as site:
        yield site


def offline_page(browser, site: Site, color_scheme: str):
    """A page in a fresh context that records (and refuses) every request to another origin, and any dialog."""
    context = browser.new_context(color_scheme=color_scheme, viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    leaks: list[str] = []
    page.on("dialog", lambda dialog: leaks.append(f"a dialog opened: {dialog.message}"))  # a script ran

    def guard(route):
        if route.request.url.startswith(site.origin + "/"):
            route.continue_()
        else:
            leaks.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    return context, page, leaks


def keyboard_sign_in(page, key: str) -> None:
    """Type `key` into the field that has focus on arrival, and Enter. Autofocus is applied at a rendering step, which
    may come after the load event `goto` waits for (keys typed before it go to the page): wait for the focus first."""
    page.wait_for_function("document.activeElement !== null && document.activeElement.id === 'key'")
    page.keyboard.type(key)
    page.keyboard.press("Enter")


def axe_violations(page) -> list[dict]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:5]} for v in results.response["violations"]]


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
def test_dashboard_in_chromium(browser, site, color_scheme):
    context, page, leaks = offline_page(browser, site, color_scheme)
    try:
        page.goto(site.origin + "/dashboard")
        # The key field has focus on arrival (`keyboard_sign_in` waits for it): keyboard only from here.
        assert page.get_by_label("Secret key").get_attribute("type") == "password"
        keyboard_sign_in(page, "sk_wrong")
        error = page.locator("#key-error")
        error.wait_for()
        assert error.inner_text() == "Unknown or revoked secret key."
        assert page.get_by_label("Secret key").get_attribute("aria-invalid") == "true"
        assert axe_violations(page) == []

        keyboard_sign_in(page, SECRET)  # the field has focus again on the page with the error
        page.get_by_role("heading", name="Alerts").wait_for()
        assert page.context.cookies()[0]["httpOnly"] is True
        charts = page.locator('svg[role="img"]')
        assert charts.count() == len(dashboard.SIGNALS) + 2
        first = charts.first.get_attribute("aria-label")
        assert re.search(r"model-b · \w+ rose from", first) and "1 alert marked" in first
        assert page.locator("svg .alert-rule").count() >= 2  # A1 on thumbs-down, A2 on regenerated
        assert page.locator("table.alerts tbody tr").count() == 2
        assert page.locator("table.alerts").get_by_text("model-b · answer").is_visible()
        assert page.locator("table.alerts").get_by_text(HOSTILE_MODEL).is_visible()  # shown as text, never run
        # The series colours follow the theme.
        line_colour = page.evaluate("getComputedStyle(document.querySelector('.chart .line.c0')).stroke")
        assert line_colour == ("rgb(0, 105, 168)" if color_scheme == "light" else "rgb(86, 180, 233)")
        assert axe_violations(page) == []

        # Open a chart's numbers with the keyboard: the table is checked by axe too.
        page.locator("details summary").first.focus()
        page.keyboard.press("Enter")
        assert page.locator("details").first.get_attribute("open") is not None
        assert page.locator("table.numbers").first.is_visible()
        assert axe_violations(page) == []

        ARTIFACTS.mkdir(exist_ok=True)
        page.keyboard.press("Enter")  # close it again for the screenshot
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{color_scheme}.png"), full_page=True)

        # Filters are a plain GET form: change the signal from the keyboard and apply.
        page.get_by_label("Signal", exact=True).focus()
        page.keyboard.press("End")  # the last option: "Any vote"
        page.get_by_role("button", name="Apply").focus()
        page.keyboard.press("Enter")
        page.wait_for_url("**/dashboard?*signal=feedback_any*")
        assert charts.count() == 1 + 2

        # Sign out with the keyboard.
        page.get_by_role("button", name="Sign out").focus()
        page.keyboard.press("Enter")
        page.get_by_label("Secret key").wait_for()
        assert page.context.cookies() == []
        assert leaks == []
    finally:
        context.close()


def test_theme_toggle_by_keyboard_overrides_the_system(browser, site):
    context, page, leaks = offline_page(browser, site, "light")
    try:
        page.goto(site.origin + "/dashboard")
        keyboard_sign_in(page, SECRET)
        # Signed in: the sign-in page has the same toggle, and a reload before the sign-in's redirect lands signs out.
        page.get_by_role("heading", name="Alerts").wait_for()
        toggle = page.get_by_role("button", name="Theme: auto")
        toggle.focus()
        page.keyboard.press("Enter")
        assert page.evaluate("document.documentElement.dataset.theme") == "light"
        page.keyboard.press("Enter")
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") == "rgb(17, 20, 24)"
        page.reload()
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"  # remembered
        assert page.get_by_role("button", name="Theme: dark").is_visible()
        assert axe_violations(page) == []
        # A filter the page does not know: the error is inline, tied to its field, and accessible.
        page.goto(site.origin + "/dashboard?range=1y")
        assert page.get_by_label("Range").get_attribute("aria-invalid") == "true"
        assert page.locator("#range-error").is_visible()
        assert axe_violations(page) == []
        assert leaks == []
    finally:
        context.close()
