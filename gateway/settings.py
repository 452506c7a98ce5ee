"""Every gateway setting, declared once, in `Settings`: name, type, default and help.

Each reads from the environment as `BACKCHANNEL_<NAME>` and is a `backchannel serve --<name>` option, which wins. The
README's settings table is `settings_table()` (tests/test_docs.py checks it).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Mapping, get_type_hints

from gateway.analytics.drift import DEFAULTS as DRIFT
from gateway.analytics.rates import OUTLIER_MIN_VOTES

ENV_PREFIX = "BACKCHANNEL_"


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", "Interface `backchannel serve` binds to.")
    port: int = _setting(8000, "Port `backchannel serve` listens on.")
    db: str = _setting("backchannel.db", "Path of the SQLite database (WAL mode).")
    redis: str = _setting("", "Redis URL for shared rate-limit and de-dup state across gateway processes; empty: "
                              "in-process.")
    redis_timeout_ms: int = _setting(100, "Redis socket timeout; past it the gateway fails open to its in-process "
                                          "limiter.")
    limit_session: str = _setting("10/s burst 200", "Events per (project, session): `N/s`, `N/min`, `N/h` or `N/d`, "
                                                     "optional `burst B` (at least 100, one full request).")
    limit_ip: str = _setting("100/s burst 1000", "Events per (project, client IP).")
    limit_project: str = _setting("5000/s burst 20000", "Events per project.")
    token_ttl: int = _setting(7 * 86400, "Default lifetime of a feedback token, in seconds (7 days).")
    seen_ttl: int = _setting(7 * 86400, "With Redis, how long a committed event id is answered `duplicate` from Redis "
                                        "(the de-dup fast path), in seconds; later retries are answered by the store.")
    ip_salt: str = _setting("", "A pepper for client-IP hashes, kept out of the database (the daily salts are in "
                                "it): with one set, the database alone cannot recompute even today's hashes. Empty: "
                                "none.")
    forwarded_allow_ips: str = _setting("127.0.0.1", "Proxies trusted to append to `X-Forwarded-For`: "
                                                     "comma-separated IPs and CIDRs, `*` for all. The client is the "
                                                     "rightmost address not in the list; an untrusted peer is the "
                                                     "client itself.")
    metrics_token: str = _setting("", "Bearer token a Prometheus scraper must send to read `/metrics` (at least 16 "
                                      "printable ASCII characters; set it in the environment, where `ps` does not "
                                      "show it); empty: `/metrics` is off.")
    read_timeout: int = _setting(30, "Seconds a client has to send a request's head and body; past it the request is "
                                     "answered 408 and its connection closed (0: no bound).")
    timeout_keep_alive: int = _setting(5, "Seconds an idle keep-alive connection stays open between requests.")
    limit_concurrency: int = _setting(0, "Most open connections and requests in progress; past it new requests are "
                                         "answered 503 (0: no limit).")
    max_body_bytes: int = _setting(65536, "Largest `/v1/events` body accepted, after decompression.")
    sqlite_busy_timeout_ms: int = _setting(5000, "How long a write waits for a lock held by another process before "
                                                 "it fails (503).")
    commit_max_batch: int = _setting(2000, "Most events the writer commits in one transaction.")
    sqlite_synchronous: str = _setting("FULL", "SQLite `synchronous` pragma for the writer: FULL survives power loss, "
                                               "NORMAL only a crash.")
    encryption_key: str = _setting("", "Key that destination credentials are encrypted with (Fernet, key derived with "
                                       "HKDF): random, at least 32 characters; `new,old` to rotate. No default: "
                                       "required once a destination exists.")
    forward_concurrency: int = _setting(8, "Forwarding: destinations delivered to at once, and requests in flight "
                                           "per destination.")
    forward_timeout_ms: int = _setting(10000, "Forwarding: timeout of one request to a destination.")
    forward_max_backoff_ms: int = _setting(600000, "Forwarding: longest wait between two tries of one record (the "
                                                   "waits double from 1 s up to it, with jitter; dead after 72 h).")
    judge: str = _setting("", "Review: the judge that pre-labels queue items at fill time, a dotted path "
                              "(`package.module:judge`) or an entry point's name in `backchannel.judges`; empty: none.")
    embedder: str = _setting("", "Review: the text embedder of `cluster` and `novelty` sampling, a dotted path or an "
                                 "entry point's name in `backchannel.embedders`; empty: hashed n-grams (offline).")
    auto_fill_interval: int = _setting(3600, "Review: seconds between checks for `auto_fill: daily` queues due a fill "
                                             "(0: no auto-fill in this process).")
    outlier_min_votes: int = _setting(OUTLIER_MIN_VOTES, "Stats: a session is flagged as an outlier (left out of "
                                                         "`/v1/stats` unless `include_flagged`) when it cast at least "
                                                         "this many votes in the range, all of the same value.")
    drift_min_impressions: int = _setting(DRIFT.min_impressions, "Drift alerts: impressions a stream's reference "
                                                                 "window needs before it can alert.")
    drift_arl_hours: int = _setting(DRIFT.arl_hours, "Drift alerts: the detector's threshold, as the least mean "
                                                     "number of hourly looks between false alarms (docs/drift.md).")
    drift_reference_days: int = _setting(DRIFT.reference_days, "Drift alerts: days in the trailing reference "
                                                               "window each stream's baseline is learned from.")
    drift_gap_hours: int = _setting(DRIFT.gap_hours, "Drift alerts: most recent hours kept out of the reference "
                                                     "window (so a change is caught before it becomes the baseline).")
    log_level: str = _setting("info", "Log level: debug, info, warning, error.")

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `BACKCHANNEL_*` environment variables, then `overrides` that are not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            if overrides.get(setting.name) is not None:
                values[setting.name] = setting.coerce(overrides[setting.name])
            elif setting.env in environ:
                values[setting.name] = setting.coerce(environ[setting.env])
        return cls(**values)


@dataclass(frozen=True)
class Setting:
    """One field of `Settings`, as the environment, the command line and the README see it."""

    name: str
    type: type
    default: Any
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def coerce(self, raw: Any) -> Any:
        """`raw` (text from the environment or the command line, or a value of the type) as the setting's type."""
        if isinstance(raw, self.type) and not (self.type is int and isinstance(raw, bool)):
            return raw
        text = str(raw).strip()
        if self.type is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"{self.env} must be true or false, got {text!r}")
        if self.type is int:
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{self.env} must be an integer, got {text!r}") from None
        return text

    def shown_default(self) -> str:
        """The default as the README shows it."""
        if self.default == "":
            return "(empty)"
        if isinstance(self.default, bool):
            return f"`{str(self.default).lower()}`"
        return f"`{self.default}`"


def _declared() -> tuple[Setting, ...]:
    types = get_type_hints(Settings)
    out = []
    for f in fields(Settings):
        assert f.default is not MISSING
        out.append(Setting(f.name, types[f.name], f.default, f.metadata["help"]))
    return tuple(out)


SETTINGS: tuple[Setting, ...] = _declared()
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def add_options(parser: argparse.ArgumentParser, *names: str, **defaults: Any) -> None:
    """`--<name>` options for these settings (all of them without names), read back by `from_options`. Each takes
    text, coerced as its environment variable is; `defaults` replace the settings' own (e.g. the demo's database)."""
    for setting in [BY_NAME[name] for name in names] if names else SETTINGS:
        default = defaults.get(setting.name)
        shown = default if default is not None else setting.default
        parser.add_argument(setting.option, dest=setting.name, default=default, metavar=setting.type.__name__.upper(),
                            help=f"{setting.help} Default: {shown!r}; environment: {setting.env}.")


def from_options(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    return Settings.load(environ, **{s.name: getattr(args, s.name, None) for s in SETTINGS})


def settings_table() -> str:
    """The README's settings table."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.env}` | {s.shown_default()} | {s.help} |" for s in SETTINGS]
    return "\n".join(lines)
