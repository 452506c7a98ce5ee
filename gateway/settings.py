"""Every gateway setting, defined once: name, default, type and help.

Each reads from the environment as `BACKCHANNEL_<NAME>`; CLI options override. The README's settings table lists them all
(tests/test_docs.py checks it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "BACKCHANNEL_"


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Interface `backchannel serve` binds to."),
    Setting("port", 8000, "Port `backchannel serve` listens on."),
    Setting("db", "backchannel.db", "Path of the SQLite database (WAL mode)."),
    Setting("redis", "", "Redis URL for shared rate-limit and de-dup state across gateway processes; empty: in-process."),
    Setting("redis_timeout_ms", 100, "Redis socket timeout; past it the gateway fails open to its in-process limiter."),
    Setting("limit_session", "10/s burst 200", "Events per (project, session): `N/s`, `N/min` or `N/h`, optional `burst B`."),
    Setting("limit_ip", "100/s burst 1000", "Events per (project, client IP)."),
    Setting("limit_project", "5000/s burst 20000", "Events per project."),
    Setting("token_ttl", 7 * 86400, "Default lifetime of a feedback token, in seconds."),
    Setting("ip_salt", "", "Salt for hashing client IPs; empty: a random salt kept in the database."),
    Setting("trust_forwarded_for", False, "Take the client IP from `X-Forwarded-For` (only behind a trusted proxy)."),
    Setting("max_body_bytes", 65536, "Largest `/v1/events` body accepted, after decompression."),
    Setting("sqlite_busy_timeout_ms", 5000, "How long a write waits for a lock held by another process before it fails (503)."),
    Setting("commit_max_batch", 2000, "Most events the writer commits in one transaction."),
    Setting("sqlite_synchronous", "FULL", "SQLite `synchronous` pragma for the writer: FULL survives power loss, NORMAL only a crash."),
    Setting("log_level", "info", "Log level: debug, info, warning, error."),
)


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    db: str
    redis: str
    redis_timeout_ms: int
    limit_session: str
    limit_ip: str
    limit_project: str
    token_ttl: int
    ip_salt: str
    trust_forwarded_for: bool
    max_body_bytes: int
    sqlite_busy_timeout_ms: int
    commit_max_batch: int
    sqlite_synchronous: str
    log_level: str

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then `BACKCHANNEL_*` environment variables, then `overrides` that are not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            value = setting.default
            if setting.env in environ:
                value = _coerce(setting, environ[setting.env])
            if overrides.get(setting.name) is not None:
                value = _coerce(setting, overrides[setting.name])
            values[setting.name] = value
        return cls(**values)


def _coerce(setting: Setting, raw: Any) -> Any:
    kind = type(setting.default)
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    text = str(raw).strip()
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{setting.env} must be true or false, got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{setting.env} must be an integer, got {text!r}") from None
    return text


assert [s.name for s in SETTINGS] == [f.name for f in fields(Settings)], "SETTINGS and Settings must list the same names"
