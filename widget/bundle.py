"""The widget as served: `src/*.js` joined into one IIFE, minified, hashed, pre-compressed. Built once per process."""

from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import brotli
import rjsmin

SOURCE_DIR = Path(__file__).parent / "src"
# Order matters: later files use what earlier ones define at load time; main.js starts everything.
SOURCES = ("config.js", "queue.js", "ui.js", "signals.js", "main.js")


@dataclass(frozen=True)
class Bundle:
    raw: bytes
    gzip: bytes
    brotli: bytes
    version: str  # content hash: names the immutable URL

    @property
    def path(self) -> str:
        """The versioned, cache-forever URL path of this build."""
        return f"/v1/widget.{self.version}.js"


def source() -> str:
    """The unminified bundle."""
    body = "\n".join((SOURCE_DIR / name).read_text(encoding="utf-8") for name in SOURCES)
    return '(function(){"use strict";\n' + body + "\n})();\n"


def build() -> Bundle:
    raw = rjsmin.jsmin(source()).encode()
    return Bundle(
        raw=raw,
        gzip=gzip.compress(raw, compresslevel=9, mtime=0),
        brotli=brotli.compress(raw, quality=11, mode=brotli.MODE_TEXT),
        version=hashlib.sha256(raw).hexdigest()[:12],
    )


@functools.cache
def bundle() -> Bundle:
    return build()
