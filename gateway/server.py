"""Serving the gateway with uvicorn: the one configuration `backchannel serve` and `backchannel demo` share."""

from __future__ import annotations

import gc
import logging
import resource
from typing import Any

import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from gateway import slowclients
from gateway.fastpath import http_protocol
from gateway.settings import Settings

log = logging.getLogger("backchannel.server")


def uvicorn_config(app: Any, *, host: str, port: int, log_level: str = "info", fast: bool = True,
                   settings: Settings | None = None) -> uvicorn.Config:
    """`fast`: the gateway's own HTTP protocol (`gateway/fastpath.py`); other apps get uvicorn's. Both close slow
    clients (`gateway/slowclients.py`); `settings` give the timeouts and the concurrency limit (else the defaults).

    uvicorn's own proxy-header handling is off: with it, a peer in uvicorn's FORWARDED_ALLOW_IPS (127.0.0.1 unless set)
    would have its `X-Forwarded-For` read by uvicorn's rule before the gateway's trust list
    (BACKCHANNEL_FORWARDED_ALLOW_IPS, `gateway/clientip.py`) is asked."""
    settings = settings or Settings()
    protocol = http_protocol() if fast else import_from_string(HTTP_PROTOCOLS["auto"])
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, server_header=False,
                          proxy_headers=False, http=slowclients.guarded(protocol, settings.read_timeout),
                          timeout_keep_alive=settings.timeout_keep_alive,
                          limit_concurrency=settings.limit_concurrency or None)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (every connection is a file descriptor; a
    common default of 1,024 runs out long before the CPU does), and return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit some kernels refuse as a soft one
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, hard, exc)
            return soft
    return hard


def tune_gc() -> None:
    """Collect cyclic garbage less often (a request allocates many short-lived objects and almost no cycles; at the
    default threshold the collector cost ~10% of the ingest path), and freeze what start-up made out of every
    collection."""
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
