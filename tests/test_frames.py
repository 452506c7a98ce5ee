"""The pipes' framing (gateway/store/frames.py): whole frames are taken from a buffer, a partial one waits for more."""

from __future__ import annotations

import os
import threading

from gateway.store.frames import frame, take, write_all


def test_whole_frames_are_taken_and_a_partial_one_stays_for_the_rest():
    stream = frame(b"one") + frame(b"") + frame(b"three" * 1000)
    buffer = bytearray()
    taken = []
    for i in range(0, len(stream), 7):  # as reads hand the bytes over: in pieces that cut frames anywhere
        buffer += stream[i:i + 7]
        taken += take(buffer, bytes)
    assert taken == [b"one", b"", b"three" * 1000] and buffer == bytearray()


def test_a_blocking_write_carries_all_of_a_frame_larger_than_the_pipe():
    read_end, write_end = os.pipe()
    body = os.urandom(200_000)  # more than a pipe holds: the writer blocks until the reader takes some

    def send() -> None:
        write_all(write_end, frame(body))
        os.close(write_end)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        buffer, taken = bytearray(), []
        while chunk := os.read(read_end, 1 << 16):
            buffer += chunk
            taken += take(buffer, bytes)
        assert taken == [body] and buffer == bytearray()
    finally:
        sender.join()
        os.close(read_end)
