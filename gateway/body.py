"""Reading a request body with a size limit, for every route that takes one."""

from __future__ import annotations

import zlib
from functools import lru_cache

from starlette.requests import Request
from starlette.types import Receive

from gateway import bounds
from gateway.errors import HTTPProblem


# Headers whose second copy would change how the body reads: with two, which one a server takes (the first, the last)
# is a guess another server in front of it may guess otherwise.
_ONCE = (b"content-type", b"content-encoding")
UTF8 = (b"utf-8", b"utf8")


def check_media_type(raw: list[tuple[bytes, bytes]], accepted: tuple[bytes, ...],
                     headers: dict[bytes, bytes] | None = None) -> bytes:
    """The request's media type, if it is one of `accepted` (lower-case); refused with 415 if it is not or names a
    charset other than UTF-8, and with 400 if Content-Type or Content-Encoding comes more than once.

    `raw` are the ASGI scope's headers; `headers` the same as a dict, if the caller has it already."""
    if headers is None:
        headers = dict(raw)
    if len(headers) != len(raw):  # some header came twice: one of these?
        for once in _ONCE:
            if sum(name == once for name, _ in raw) > 1:
                raise HTTPProblem("malformed", f"{once.decode()} appears more than once")
    value = headers.get(b"content-type", b"")
    # Browsers send a handful of spellings: each is parsed once (a long one, which none of them is, every time).
    media_type, problem = (_media_type if len(value) <= 100 else _media_type.__wrapped__)(value, accepted)
    if problem:
        raise HTTPProblem("unsupported_media_type", problem)
    return media_type


@lru_cache(maxsize=256)
def _media_type(value: bytes, accepted: tuple[bytes, ...]) -> tuple[bytes, str]:
    """(media type, why it is refused or "")."""
    media_type, _, params = value.partition(b";")
    media_type = media_type.strip().lower()
    if media_type not in accepted:
        return media_type, f"send {' or '.join(t.decode() for t in accepted)}"
    for param in params.split(b";") if params else ():
        name, _, charset = param.partition(b"=")
        if name.strip().lower() == b"charset" and charset.strip().strip(b'"').lower() not in UTF8:
            return media_type, "the only charset accepted is utf-8"
    return media_type, ""


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The request body, decompressed, refused (413) past `limit` bytes — checked while reading, not after.

    `headers` are the ASGI scope's, as a dict (names are lower-case there)."""
    encoding = headers.get(b"content-encoding")
    if encoding is not None:
        encoding = encoding.decode("latin-1").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise HTTPProblem("unsupported_media_type",
                              f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem("too_large", f"body is {declared.decode()} bytes; the limit is {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPProblem("malformed", "the client went away before the body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPProblem("too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise HTTPProblem("malformed", "body is not valid gzip") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise HTTPProblem("too_large", f"decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise HTTPProblem("malformed", "gzip body is truncated")
        if inflater.unused_data:  # a second member, or garbage: zlib stops at the end of the first
            raise HTTPProblem("malformed", "gzip body has data after its end")
    return body


def check_depth(body: bytes) -> None:
    """Refuse (400) a JSON body that nests deeper than `bounds.MAX_BODY_DEPTH`, before a decoder recurses into it."""
    if bounds.nesting_exceeds(body):
        raise HTTPProblem("malformed", f"body nests deeper than {bounds.MAX_BODY_DEPTH} levels")


async def read_json(request: Request, limit: int) -> bytes:
    """The body of a route that takes JSON: `application/json` (else 415), at most `limit` bytes (`read_body`), and
    no deeper than `check_depth` allows."""
    headers = dict(request.scope["headers"])
    check_media_type(request.scope["headers"], (b"application/json",), headers)
    body = await read_body(request.receive, headers, limit)
    check_depth(body)
    return body
