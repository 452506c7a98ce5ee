"""Reading a request body with a size limit, for every route that takes one."""

from __future__ import annotations

import zlib

from starlette.types import Receive

from gateway.errors import HTTPProblem


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
    return body
