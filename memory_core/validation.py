"""Checks applied to everything a caller hands us before it reaches a store.

Text is stored verbatim or rejected with a ValueError; it is never interpolated into a query.
Postgres cannot store NUL in text and Neo4j/Redis/JSON cannot round-trip lone surrogates,
so both are rejected rather than silently altered.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

_ID_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
MAX_ID_CHARS = 200


def check_text(value: object, name: str, max_chars: int, *, allow_empty: bool = False) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name} is not valid UTF-8: {exc}") from None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be str, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    if len(value) > max_chars:
        raise ValueError(f"{name} is {len(value)} characters; the limit is {max_chars}")
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character, which Postgres cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} contains a lone surrogate and is not valid Unicode") from None
    return value


def check_id(value: object, name: str) -> str:
    """Identifiers (tenant, user, conversation, agent, space) are short printable strings."""
    text = check_text(value, name, MAX_ID_CHARS)
    if _ID_FORBIDDEN.search(text):
        raise ValueError(f"{name} must not contain control characters")
    if text != text.strip():
        raise ValueError(f"{name} must not start or end with whitespace")
    return text


def check_embedding(vector: Sequence[float], dim: int, name: str = "embedding") -> list[float]:
    try:
        values = [float(x) for x in vector]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers") from None
    if len(values) != dim:
        raise ValueError(f"{name} has {len(values)} dimensions; the store is configured for {dim}")
    if not all(math.isfinite(x) for x in values):
        raise ValueError(f"{name} contains NaN or infinity")
    if not any(values):
        raise ValueError(f"{name} is the zero vector, which has no cosine similarity")
    return values


def check_unit_interval(value: float, name: str) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")
    return value


def check_ttl(ttl_seconds: float | None, name: str = "ttl_seconds") -> float | None:
    if ttl_seconds is None:
        return None
    ttl = float(ttl_seconds)
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"{name} must be a positive finite number of seconds, got {ttl_seconds!r}")
    return ttl


def check_json(value: Any, name: str) -> str:
    """Serialise `value` for a jsonb column: no NaN/inf (not JSON), no NUL (jsonb rejects it)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from None
    if "\\u0000" in text:
        raise ValueError(f"{name} contains a NUL character, which Postgres jsonb cannot store")
    return text
