"""Text embeddings for sampling: the offline default (hashed n-grams, TF-IDF weighted) and the plug-in point.

An embedder maps a batch of texts to one L2-normalised row each, so a dot product is a cosine similarity. The default
needs no model and no download; a deployment may name its own in the `BACKCHANNEL_EMBEDDER` setting (see
`load_embedder`), e.g. a class wrapping a sentence-embedding model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from gateway.review.plugins import resolve

DIMENSIONS = 2048
MAX_CHARS = 4000
ENTRY_POINT_GROUP = "backchannel.embedders"

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
_DIGIT = re.compile(r"\d")
_MULTIPLIER = np.uint64(0x100000001B3)  # the FNV-1a 64-bit prime: odd, so no bits are lost in the products
# A seed per feature family, so that the word "the" and the character trigram "the" land in different buckets.
_WORD_SEED, _BIGRAM_SEED = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)
_CHAR_SEED = np.uint64(0x165667B19E3779F9)


class Embedder(Protocol):
    def __call__(self, texts: Sequence[str], /) -> np.ndarray:
        """A float32 array of shape (len(texts), dimensions), each row of L2 norm 1, or 0 for a text with no features.

        Similarities are only meaningful between rows of one call: embed everything you compare together.
        """
        ...


class HashedTfidf:
    """Character 3-5-grams and word 1-2-grams, hashed into `dimensions` buckets, weighted by log(1 + count) × IDF.

    The IDF is the batch's own (smoothed as in scikit-learn: ln((1 + n) / (1 + df)) + 1), so a phrase every text
    shares (a template's boilerplate) weighs little. Every digit reads as 0: otherwise an order number or a date, unique
    to each text and so of the highest IDF, would set apart texts that say the same thing. Hashing is deterministic (no
    per-process salt). A text is read up to its first `max_chars` characters, lower-cased, whitespace runs as one space.
    """

    def __init__(self, dimensions: int = DIMENSIONS, max_chars: int = MAX_CHARS) -> None:
        if dimensions < 1 or dimensions & (dimensions - 1):
            raise ValueError("dimensions must be a power of two")
        self.dimensions = dimensions
        self.max_chars = max_chars

    def __call__(self, texts: Sequence[str], /) -> np.ndarray:
        counts = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        word_hashes: dict[str, int] = {}
        for row, text in enumerate(texts):
            buckets = self._buckets(text, word_hashes)
            counts[row] = np.bincount(buckets, minlength=self.dimensions)
        document_frequency = np.count_nonzero(counts, axis=0)
        idf = np.log((1 + len(texts)) / (1 + document_frequency)) + 1
        return normalise(np.log1p(counts) * idf.astype(np.float32))

    def _buckets(self, text: str, word_hashes: dict[str, int]) -> np.ndarray:
        text = _DIGIT.sub("0", _SPACE.sub(" ", text[: self.max_chars].lower()).strip())
        words = _WORD.findall(text)
        for word in words:
            if word not in word_hashes:
                word_hashes[word] = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        unigrams = np.array([word_hashes[w] for w in words], dtype=np.uint64)
        features = [unigrams ^ _WORD_SEED, (unigrams[:-1] * _MULTIPLIER + unigrams[1:]) ^ _BIGRAM_SEED]
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.uint64)
        for n in (3, 4, 5):
            features.append(_ngram_hashes(codes, n) ^ _CHAR_SEED)
        hashes = _mix(np.concatenate(features))
        return (hashes & np.uint64(self.dimensions - 1)).astype(np.intp)


def _ngram_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """A polynomial hash of every run of `n` consecutive code points (uint64 arithmetic wraps, as intended)."""
    count = len(codes) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    hashes = np.full(count, n, dtype=np.uint64)
    for offset in range(n):
        hashes = hashes * _MULTIPLIER + codes[offset : offset + count]
    return hashes


def _mix(hashes: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves the low bits the buckets are taken from."""
    hashes = hashes ^ (hashes >> np.uint64(30))
    hashes = hashes * np.uint64(0xBF58476D1CE4E5B9)
    hashes = hashes ^ (hashes >> np.uint64(27))
    hashes = hashes * np.uint64(0x94D049BB133111EB)
    return hashes ^ (hashes >> np.uint64(31))


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to L2 norm 1; a zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine similarity of two vectors; 0 when either is zero."""
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b)) / norms if norms else 0.0


def max_similarity(vectors: np.ndarray, others: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each row of `vectors`, its highest cosine similarity to any row of `others` (-1 when there are none).

    Both must be normalised. Works through `others` in chunks, so memory stays len(vectors) × chunk.
    """
    best = np.full(len(vectors), -1.0, dtype=np.float32)
    for start in range(0, len(others), chunk):
        np.maximum(best, (vectors @ others[start : start + chunk].T).max(axis=1), out=best)
    return best


def load_embedder(spec: str = "") -> Embedder:
    """The embedder the `BACKCHANNEL_EMBEDDER` setting names: empty for `HashedTfidf`, else a dotted path
    (`package.module:Class`) or an entry point's name in the `backchannel.embedders` group. Its rows are normalised
    here, so a model that returns raw vectors still works."""
    if not spec.strip():
        return HashedTfidf()
    plugged = resolve(spec, ENTRY_POINT_GROUP)
    if not callable(plugged):
        raise TypeError(f"embedder {spec!r} is not callable")
    return lambda texts: normalise(plugged(texts))  # type: ignore[no-any-return]
