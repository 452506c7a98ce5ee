import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gateway.review.embed import HashedTfidf, cosine, load_embedder, max_similarity, normalise
from gateway.review.plugins import PluginError


def test_rows_are_unit_vectors_and_empty_text_is_zero():
    vectors = HashedTfidf()(["The cat sat on the mat.", "A quarterly revenue report", ""])
    assert vectors.shape == (3, 2048) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0, 0.0], abs=1e-6)


def test_similar_texts_are_closer_than_unrelated_ones():
    a, b, c = HashedTfidf()(["the cat sat on the mat", "the cat sat on a mat", "quarterly revenue grew 5 percent"])
    assert cosine(a, b) > 0.5 > 0.1 > cosine(a, c)
    assert cosine(a, np.zeros_like(a)) == 0.0


def test_idf_discounts_what_every_text_shares():
    boilerplate = "Dear customer, thank you for contacting Acme support, we value your business. "
    a, b = boilerplate + "Your parcel ships tomorrow.", boilerplate + "Your password was reset."
    alone = HashedTfidf()([a, b])
    crowd = HashedTfidf()([a, b] + [boilerplate + f"Ticket {i} is about topic {i * 7919}." for i in range(50)])
    assert cosine(crowd[0], crowd[1]) < cosine(alone[0], alone[1]) - 0.1


def test_same_vectors_in_another_process():
    # Python's own str hash is salted per process; the buckets must not depend on it.
    script = textwrap.dedent("""
        import hashlib
        from gateway.review.embed import HashedTfidf
        print(hashlib.sha256(HashedTfidf()(["Hello wörld, hello again", "naïve café ☕"]).tobytes()).hexdigest())
    """)
    digests = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent.parent, env={"PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert len(digests) == 1


def test_text_is_read_up_to_max_chars():
    embed = HashedTfidf(max_chars=10)
    first, second = embed(["0123456789 and then something", "0123456789 but another thing"])
    assert cosine(first, second) == pytest.approx(1.0)


def test_dimensions_must_be_a_power_of_two():
    with pytest.raises(ValueError):
        HashedTfidf(dimensions=1000)


def test_max_similarity_in_chunks_matches_the_full_product():
    rng = np.random.default_rng(3)
    vectors, others = normalise(rng.normal(size=(7, 16))), normalise(rng.normal(size=(25, 16)))
    assert max_similarity(vectors, others, chunk=4) == pytest.approx((vectors @ others.T).max(axis=1), abs=1e-6)
    assert (max_similarity(vectors, others[:0]) == -1).all()


class RawModel:
    """Stands for a sentence-embedding model: returns vectors that are not normalised."""

    def __call__(self, texts):
        return np.array([[len(t), 1.0] for t in texts])


def test_load_embedder_default_and_dotted_path():
    assert isinstance(load_embedder(""), HashedTfidf)
    plugged = load_embedder("tests.test_review_embed:RawModel")
    assert np.linalg.norm(plugged(["abc", "abcdef"]), axis=1) == pytest.approx([1.0, 1.0])
    with pytest.raises(PluginError):
        load_embedder("tests.test_review_embed:NoSuchModel")
    with pytest.raises(PluginError):
        load_embedder("not_an_entry_point_name")
    with pytest.raises(TypeError):
        load_embedder("gateway.review.embed:DIMENSIONS")
