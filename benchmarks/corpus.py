"""Synthetic conversation text for the retrieval benchmarks, and its embeddings in bulk.

Conversations stay on a topic: most words come from the topic's vocabulary, the rest are
Zipf-distributed common words. (Uniformly random text has no neighbourhood structure, unlike
embeddings of real conversations, and is the worst case for any ANN index.)"""

from __future__ import annotations

import random

import numpy as np
from scipy.sparse import csr_matrix

from memory_core.embeddings import HashingEmbedder

VOCABULARY_SIZE = 3000
TOPIC_WORDS = 30
_SYLLABLES = ["ka", "lo", "mi", "ne", "ra", "to", "su", "vi", "de", "po", "an", "el", "or", "us", "in"]


def words(seed: int) -> list[str]:
    rng = random.Random(seed)
    vocabulary: set[str] = set()
    while len(vocabulary) < VOCABULARY_SIZE:
        vocabulary.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(vocabulary)


def topics(vocabulary: list[str], count: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [rng.sample(vocabulary, TOPIC_WORDS) for _ in range(count)]


def sentence(rng: random.Random, vocabulary: list[str], topic: list[str] | None = None) -> str:
    def word() -> str:
        if topic is not None and rng.random() < 0.7:
            return rng.choice(topic)
        return vocabulary[min(int(rng.paretovariate(1.1)) - 1, len(vocabulary) - 1)]

    return " ".join(word() for _ in range(rng.randint(8, 20)))


class BulkEmbedder:
    """The HashingEmbedder's vectors for texts made of a known vocabulary, a million at a time.

    The hashing embedder sums one feature vector per word (the word and its trigrams) and
    normalises the sum, so each word's vector is computed once and a text's vector is a
    sparse word-count matrix times the word vectors: seconds for a million texts instead of minutes. `check`
    compares a sample with the embedder itself, so a change to the embedder fails the load
    instead of silently making the queries (embedded by the service) miss the dataset."""

    def __init__(self, embedder: HashingEmbedder, vocabulary: list[str]):
        self.embedder = embedder
        self.index = {w: i for i, w in enumerate(vocabulary)}
        rows = np.zeros((len(vocabulary), embedder.dim), dtype=np.float64)
        for w, i in self.index.items():
            feature = [0.0] * embedder.dim
            # The embedder's own feature hashing, word by word (its per-text loop, without the norm).
            embedder._add(feature, "w:" + w, 1.0)
            padded = f"#{w}#"
            for j in range(len(padded) - 2):
                embedder._add(feature, "c:" + padded[j : j + 3], 0.5)
            rows[i] = feature
        self.rows = rows

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 unit vectors, one row per text."""
        tokens = [t.split() for t in texts]
        columns = np.fromiter((self.index[w] for ws in tokens for w in ws), dtype=np.int64)
        offsets = np.cumsum([0] + [len(ws) for ws in tokens])
        counts = csr_matrix((np.ones(len(columns)), columns, offsets), shape=(len(texts), len(self.index)))
        sums = counts @ self.rows
        return (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)

    def check(self, texts: list[str]) -> None:
        expected = np.array([self.embedder.embed_one(t) for t in texts], dtype=np.float32)
        if not np.allclose(self.embed(texts), expected, atol=1e-6):
            raise AssertionError("bulk embeddings differ from the HashingEmbedder's: the embedder changed")
