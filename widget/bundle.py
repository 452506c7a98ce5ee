"""The widget as served: `dist/widget.min.js`, hashed and pre-compressed once per process.

`dist/widget.min.js` is built from the ES modules in `src/` by `build.mjs` (esbuild bundles them into one IIFE,
terser minifies it) and committed, so the gateway needs no node at run time; a test rebuilds it and compares bytes.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import brotli
import zopfli.gzip

WIDGET_DIR = Path(__file__).parent
BUILT = WIDGET_DIR / "dist" / "widget.min.js"


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


def build(raw: bytes) -> Bundle:
    return Bundle(
        raw=raw,
        # Zopfli writes ordinary gzip, ~2% smaller than zlib's best, in ~0.1 s once per process.
        gzip=zopfli.gzip.compress(raw, numiterations=15),
        brotli=brotli.compress(raw, quality=11, mode=brotli.MODE_TEXT),
        version=hashlib.sha256(raw).hexdigest()[:12],
    )


@functools.cache
def bundle() -> Bundle:
    return build(BUILT.read_bytes())
