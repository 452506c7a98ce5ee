"""The running gateway: the state every route shares (`Gateway`), typed, so a reader can follow a request into it."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from gateway import tokens
from gateway.dedup import Dedup
from gateway.directory import Directory
from gateway.metrics import Metrics
from gateway.ratelimit import Limiter, Rate, create_limiter
from gateway.schemas import MAX_EVENTS_PER_REQUEST
from gateway.settings import Settings
from gateway.store import Store, create_store


@dataclass(frozen=True)
class Rates:
    session: Rate
    ip: Rate
    project: Rate

    @classmethod
    def from_settings(cls, settings: Settings) -> Rates:
        rates = cls(Rate.parse(settings.limit_session), Rate.parse(settings.limit_ip),
                    Rate.parse(settings.limit_project))
        for name in ("session", "ip", "project"):
            # A request costs one per event; a bucket shallower than the largest request would refuse it forever.
            if getattr(rates, name).burst < MAX_EVENTS_PER_REQUEST:
                raise ValueError(f"BACKCHANNEL_LIMIT_{name.upper()} needs a burst of at least "
                                 f"{MAX_EVENTS_PER_REQUEST} (the most events one request may carry), e.g. "
                                 f"'{getattr(settings, 'limit_' + name)} burst {MAX_EVENTS_PER_REQUEST}'")
        return rates


class Gateway:
    """What the routes share: settings, store, limiter, de-dup, the key directory and metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rates = Rates.from_settings(settings)  # fails fast on a bad limit setting
        self.metrics = Metrics()
        self.store: Store = create_store(settings, on_commit=self.metrics.observe_commit)
        self.tokens = tokens.Verifier()
        self.directory = Directory(self.store, self.tokens)
        self.limiter: Limiter = create_limiter(settings.redis or None, redis_timeout=settings.redis_timeout_ms / 1000)
        self.dedup = Dedup(self.limiter, ttl=settings.seen_ttl)
        self.ip_salt = settings.ip_salt
        self.metrics.read_at_scrape("limiter_redis_errors_total", lambda: self.limiter.stats.get("redis_errors", 0),
                           "Failed Redis calls of the limiter.")
        self.metrics.read_at_scrape("limiter_fail_open_total", lambda: self.limiter.stats.get("fail_open", 0),
                           "Limiter calls answered in-process because Redis was away.")

    @staticmethod
    def today() -> int:
        return int(time.time() // 86400)

    async def start(self) -> None:
        await self.store.open()
        if not self.ip_salt:
            self.ip_salt = await self.store.meta("ip_salt", secrets.token_hex(16))

    async def stop(self) -> None:
        await self.dedup.aclose()
        await self.store.close()
        await self.limiter.aclose()


def gateway_of(connection: HTTPConnection) -> Gateway:
    """The running gateway of the app serving this request (set by `gateway.app.create_app`)."""
    gateway: Gateway = connection.app.state.gateway
    return gateway
