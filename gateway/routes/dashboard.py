"""`/dashboard`: `gateway.pages.routes.dashboard_routes` wired to the gateway: secret keys from the store, the same
answers as `GET /v1/stats` and `GET /v1/alerts`, the pages' session key and the gateway's limiter and client IP."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from gateway.core import Gateway
from gateway.pages.routes import dashboard_routes
from gateway.pages.session import Principal
from gateway.routes.alerts import alerts_answer
from gateway.routes.stats import stats_answer


def routes(gateway: Gateway) -> list[BaseRoute]:
    store = gateway.store

    async def authenticate(secret_key: str) -> Principal | None:
        key = await store.key_by_secret(secret_key)
        return Principal("secret", key.project_id, key.kid) if key is not None and not key.revoked else None

    async def is_live(principal: Principal) -> bool:
        key = await store.key_by_kid(principal.key_id)
        return key is not None and not key.revoked and key.project_id == principal.project_id

    async def fetch_stats(project_id: int, query: dict[str, str]) -> dict[str, Any]:
        return await stats_answer(gateway, project_id, list(query.items()))

    async def fetch_alerts(project_id: int, query: dict[str, str]) -> dict[str, Any]:
        return await alerts_answer(gateway, project_id, list(query.items()))

    return dashboard_routes(authenticate=authenticate, is_live=is_live, fetch_stats=fetch_stats,
                            fetch_alerts=fetch_alerts, cookie_key=lambda: gateway.page_key, limiter=gateway.limiter,
                            client_ip=lambda request: gateway.client_key(request.scope))
