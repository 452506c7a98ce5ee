"""Serving the gateway with uvicorn: the one configuration `backchannel serve` and `backchannel demo` share."""

from __future__ import annotations

import gc
from typing import Any

import uvicorn

from gateway.fastpath import http_protocol


def uvicorn_config(app: Any, *, host: str, port: int, log_level: str = "info", fast: bool = True) -> uvicorn.Config:
    """`fast`: the gateway's own HTTP protocol (`gateway/fastpath.py`); other apps get uvicorn's."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, server_header=False,
                          **({"http": http_protocol()} if fast else {}))


def tune_gc() -> None:
    """Collect cyclic garbage less often (a request allocates many short-lived objects and almost no cycles; at the
    default threshold the collector cost ~10% of the ingest path), and freeze what start-up made out of every
    collection."""
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
