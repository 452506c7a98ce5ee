"""Signed webhooks, following the Standard Webhooks convention (https://www.standardwebhooks.com).

One event per request: `webhook-id` is the event id (the same on every retry, so a receiver de-duplicates on it),
`webhook-timestamp` the send time in unix seconds, and `webhook-signature` is
`v1,` + base64(HMAC-SHA256(key, "id.ts.body")), the key being the base64 text after `whsec_` in the secret, decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from gateway.forwarding import DEFAULT_SIGNALS, Destination, OutboxRecord, Request, WebhookSecret, iso_ms

SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 300  # how far a receiver should accept `webhook-timestamp` from its own clock
_encode = msgspec.json.Encoder().encode


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of a signed POST of the JSON `body` as message `msg_id`, sent at `timestamp` (unix seconds)."""
    return {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body)}


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float,
           tolerance: int = TOLERANCE_SECONDS) -> bool:
    """Whether `body` with these headers was signed with `secret` within `tolerance` seconds of `now`."""
    msg_id, stamp, signatures = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures and stamp.isdigit()) or abs(now - int(stamp)) > tolerance:
        return False
    expected = sign(secret, msg_id, int(stamp), body)
    # The header may list several space-separated signatures (during a secret rotation): one match is enough.
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures.split())


def payload_type(record: OutboxRecord) -> str:
    return "feedback.created" if record.type == "feedback" else "signal.created"


def data(record: OutboxRecord) -> dict[str, Any]:
    """The event as the receiver sees it: ids, the trace's labels, the signal and its fields (the scrubbed comment
    included: the receiver is the operator's own endpoint)."""
    fields: dict[str, Any] = {"id": record.event_id, "project": record.project, "trace_id": record.trace_id,
                              "session_id": record.session_id, "user_id": record.user_id, "model": record.model,
                              "template": record.template, "type": record.type, "ts": record.ts}
    if record.type == "feedback":
        fields.update(value=record.value, reason=record.reason, comment=record.comment)
    fields["props"] = {k: v for k, v in record.props.items() if v is not None}
    return fields


class Webhook(Destination):
    kind = "webhook"

    def __init__(self, url: str, secret: WebhookSecret, signals: frozenset[str] = DEFAULT_SIGNALS) -> None:
        super().__init__(url, signals)
        _key(secret.secret)  # a malformed secret fails here, not at the first delivery
        self._secret = secret.secret

    def requests(self, records: Sequence[OutboxRecord], now: float) -> list[Request]:
        stamp = int(now)
        out = []
        for record in records:
            if record.type not in self.signals:
                continue
            body = _encode({"type": payload_type(record), "timestamp": iso_ms(record.ts), "data": data(record)})
            headers = signed_headers(self._secret, record.event_id, stamp, body)
            out.append(Request(self.url, body, (record.event_id,), headers, record.trace_id))
        return out
