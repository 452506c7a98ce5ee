"""Logging each generation to the gateway's `POST /v1/traces` (through `gateway.client`), which answers with the
message's feedback token."""

from __future__ import annotations

import logging

import msgspec

from gateway.client import AsyncBackchannel, BackchannelError

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
    parent_trace_id: str | None = None  # the trace a regeneration regenerates


class TraceLogger:
    """Logs traces with the project's secret key, which the client holds."""

    def __init__(self, client: AsyncBackchannel) -> None:
        self._client = client

    async def log(self, trace: Trace) -> str | None:
        """The feedback token for `trace`, or None when the gateway could not be reached or refused it.

        The chat must answer either way, so failures are logged, never raised.
        """
        fields = msgspec.structs.asdict(trace)
        try:
            return (await self._client.log_trace(fields.pop("trace_id"), fields.pop("session_id"), **fields)
                    ).feedback_token
        except BackchannelError as exc:
            logger.warning("trace %s not logged to the gateway (%s: %s); answering without a feedback token",
                           trace.trace_id, type(exc).__name__, exc)
            return None
