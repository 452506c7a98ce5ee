"""The framing of the pipes between the gateway's processes (the writer's, the folder's, the delivery process's): a
4-byte big-endian length, then a msgpack body."""

from __future__ import annotations

import os
import struct
from typing import Callable, TypeVar

FRAME_LENGTH = struct.Struct(">I")
T = TypeVar("T")


def frame(body: bytes) -> bytes:
    """`body` as one frame."""
    return FRAME_LENGTH.pack(len(body)) + body


def take(buffer: bytearray, decode: Callable[[memoryview], T]) -> list[T]:
    """Decode the whole frames at the start of `buffer` and remove them from it; a partial frame stays for more."""
    messages, offset = [], 0
    with memoryview(buffer) as view:
        while len(view) - offset >= FRAME_LENGTH.size:
            (length,) = FRAME_LENGTH.unpack_from(view, offset)
            start = offset + FRAME_LENGTH.size
            if len(view) - start < length:
                break
            messages.append(decode(view[start:start + length]))
            offset = start + length
    del buffer[:offset]
    return messages


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to a blocking descriptor."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

