import base64, hashlib, hmac, time

def verify_webhook(secret: str, headers, body: bytes, tolerance: int = 300) -> bool:
    """True if Backchannel signed this request with `secret` ("whsec_...") less than `tolerance` seconds ago.
    `headers`: the request's headers (lower-case names); `body`: the raw bytes received, not re-encoded JSON."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(hmac.compare_digest(expected, sig) for sig in headers.get("webhook-signature", "").split())
