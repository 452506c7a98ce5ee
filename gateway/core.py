"""The running gateway: the state every route shares (`Gateway`), typed, so a reader can follow a request into it."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import Scope

from gateway import clientip, tasks, tokens
from gateway.alerts import AlertWorker
from gateway.analytics.drift import DriftSettings
from gateway.dedup import Dedup
from gateway.directory import Directory
from gateway.forwarding.crypto import CredentialsError, Vault
from gateway.forwarding.process import DeliveryProcess, Start
from gateway.metrics import Metrics
from gateway.ratelimit import Limiter, Rate, create_limiter
from gateway.review.fill import Reviewing
from gateway.schemas import MAX_EVENTS_PER_REQUEST
from gateway.settings import Settings
from gateway.store import Store, StoreUnavailable, create_store


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


MIN_METRICS_TOKEN = 16
SECONDS_PER_DAY = 86_400
sleep = asyncio.sleep  # the daily salt roller's, which a test replaces
log = logging.getLogger("backchannel")


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
        try:
            self.trusted_proxies = clientip.TrustedProxies(settings.forwarded_allow_ips)
        except ValueError as exc:
            raise ValueError(f"BACKCHANNEL_FORWARDED_ALLOW_IPS: {exc}") from None
        token = settings.metrics_token
        if token and (len(token) < MIN_METRICS_TOKEN or not token.isascii() or not token.isprintable()):
            raise ValueError(f"BACKCHANNEL_METRICS_TOKEN needs at least {MIN_METRICS_TOKEN} printable ASCII characters")
        # Client-IP hashes use the day's salt, shared through the store and deleted with its day (`roll_salt`), after
        # the optional pepper from the settings, which never enters the database.
        self.salt_day = -1
        self._salt_roller: asyncio.Task[None] | None = None
        self.page_key = b""  # loaded by start()
        self.ip_salt = ""
        # Forwarding: the vault seals destination credentials; the delivery process opens them and drains the outbox.
        try:
            self.vault = Vault(settings.encryption_key) if settings.encryption_key else None
        except CredentialsError as exc:
            raise ValueError(str(exc)) from None
        self.forwarder = DeliveryProcess(self.store.outbox, Start(
            db=settings.db, busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            encryption_key=settings.encryption_key or None, concurrency=settings.forward_concurrency,
            timeout=settings.forward_timeout_ms / 1000, max_backoff=settings.forward_max_backoff_ms / 1000))
        self.metrics.registry.register(self.forwarder)
        self.review = Reviewing(self.store, judge=settings.judge, embedder=settings.embedder,
                                auto_fill_interval=settings.auto_fill_interval,
                                min_votes=settings.outlier_min_votes)
        # Drift alerts: a detector pass after each completed hour; new alerts go to the project's alert webhook.
        self.drift_settings = DriftSettings(
            min_impressions=settings.drift_min_impressions, arl_hours=settings.drift_arl_hours,
            reference_days=settings.drift_reference_days, gap_hours=settings.drift_gap_hours)
        self.alerts = AlertWorker(self.store, self.drift_settings, self.vault)
        self.metrics.read_at_scrape("limiter_redis_errors_total", lambda: self.limiter.stats.get("redis_errors", 0),
                           "Failed Redis calls of the limiter.")
        self.metrics.read_at_scrape("limiter_fail_open_total", lambda: self.limiter.stats.get("fail_open", 0),
                           "Limiter calls answered in-process because Redis was away.")

    @staticmethod
    def today() -> int:
        return int(time.time() // SECONDS_PER_DAY)

    async def roll_salt(self, day: int) -> str:
        """The salt of client-IP hashes on `day` (see `gateway/store/salts.py`), from now on `ip_salt`."""
        salt = self.settings.ip_salt + await self.store.salt_of_day(day)
        self.salt_day, self.ip_salt = day, salt
        return salt

    def client_bucket(self, scope: Scope, headers: dict[bytes, bytes] | None = None) -> str:
        """The rate-limit bucket (`clientip.bucket_key`) of the request's client: the peer, or behind trusted proxies
        the rightmost untrusted `X-Forwarded-For` hop. `headers`: the scope's as a dict, if the caller has it (then a
        request without `X-Forwarded-For` is not scanned for one)."""
        client = scope.get("client")
        peer = client[0] if client else None
        if headers is not None and b"x-forwarded-for" not in headers:
            return self._peer_bucket(peer)
        forwarded = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"]
        if not forwarded:
            return self._peer_bucket(peer)
        return clientip.bucket_key(clientip.client_address(peer, forwarded, self.trusted_proxies))

    def client_key(self, scope: Scope, headers: dict[bytes, bytes] | None = None) -> str:
        """The request's client as limiter keys and the store know it: its bucket hashed under the current day's salt
        (`roll_salt`), never its address."""
        return clientip.hash_ip(self.client_bucket(scope, headers), self.ip_salt, self.salt_day)

    @functools.lru_cache(maxsize=8192)  # noqa: B019  # one Gateway per process: the cache lives as long anyway
    def _peer_bucket(self, peer: str | None) -> str:
        return clientip.bucket_key(clientip.client_address(peer, (), self.trusted_proxies))

    async def _roll_salt_daily(self) -> None:
        """Rolls the salt as each UTC day begins, so a finished day's salt is deleted then, with or without traffic."""
        while True:
            await sleep(SECONDS_PER_DAY - time.time() % SECONDS_PER_DAY + 1)
            try:
                await self.roll_salt(self.today())
            except StoreUnavailable as exc:  # the next request rolls it
                log.warning("could not roll the client-IP salt: %s", exc)

    async def start(self) -> None:
        await self.store.open()
        await self.roll_salt(self.today())
        self._salt_roller = asyncio.create_task(self._roll_salt_daily(), name="backchannel-ip-salt")
        if self.vault is None and await self.store.outbox.any():
            raise RuntimeError("destinations are configured but BACKCHANNEL_ENCRYPTION_KEY is not set: set it to the "
                               "key their credentials were sealed with (or remove them: backchannel destination remove)")
        self.forwarder.start()
        # Signs the pages' session cookies; kept in the store so every gateway process verifies the same cookies.
        self.page_key = bytes.fromhex(await self.store.meta("page_session_key", secrets.token_hex(32)))
        self.review.start()
        self.alerts.start()

    async def stop(self) -> None:
        await tasks.cancel(self._salt_roller)
        await self.forwarder.stop()
        await self.review.stop()
        await self.alerts.stop()
        await self.dedup.aclose()
        await self.store.close()
        await self.limiter.aclose()


def gateway_of(connection: HTTPConnection) -> Gateway:
    """The running gateway of the app serving this request (set by `gateway.app.create_app`)."""
    gateway: Gateway = connection.app.state.gateway
    return gateway
