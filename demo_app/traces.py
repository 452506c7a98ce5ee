"""Logging each generation to the gateway's `POST /v1/traces`, which answers with the message's feedback token."""

from __future__ import annotations

import logging

import httpx
import msgspec

logger = logging.getLogger("demo_app")


class Trace(msgspec.Struct):
    trace_id: str
    session_id: str
    model: str
    template: str
    template_version: str
    input: str
    output: str
    metadata: dict[str, int]


class _Receipt(msgspec.Struct):
    feedback_token: str


class TraceLogger:
    """Posts traces with the project's secret key, through a client whose base URL is the gateway."""

    def __init__(self, client: httpx.AsyncClient, secret_key: str) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {secret_key}", "Content-Type": "application/json"}

    async def log(self, trace: Trace) -> str | None:
        """The feedback token for `trace`, or None when the gateway could not be reached or refused it.

        The chat must answer either way, so failures are logged, never raised.
        """
        try:
            response = await self._client.post("/v1/traces", content=msgspec.json.encode(trace), headers=self._headers)
            response.raise_for_status()
            return msgspec.json.decode(response.content, type=_Receipt).feedback_token
        except (httpx.HTTPError, msgspec.DecodeError) as exc:
            logger.warning("trace %s not logged to the gateway (%s: %s); answering without a feedback token",
                           trace.trace_id, type(exc).__name__, exc)
            return None
