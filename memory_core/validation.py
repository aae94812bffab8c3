"""Checks applied to everything a caller hands us before it reaches a store.

Text is stored verbatim or rejected with `InvalidInput`; it is never interpolated into a query.
Postgres cannot store NUL in text and Neo4j/Redis/JSON cannot round-trip lone surrogates,
so both are rejected rather than silently altered.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from .errors import InvalidInput

_ID_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
MAX_ID_CHARS = 200
# The priority of context values, entities, facts and goals: beyond these bounds a value is a
# mistake (a timestamp, a hash), and they keep `priority_boost` and the Redis encoding simple.
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000


def check_text(value: object, name: str, max_chars: int, *, allow_empty: bool = False) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{name} is not valid UTF-8: {exc}") from None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be str, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidInput(f"{name} must not be empty")
    if len(value) > max_chars:
        raise InvalidInput(f"{name} is {len(value)} characters; the limit is {max_chars}")
    if "\x00" in value:
        raise InvalidInput(f"{name} contains a NUL character, which Postgres cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{name} contains a lone surrogate and is not valid Unicode") from None
    return value


def is_blank(text: str) -> bool:
    """Empty or whitespace only: no identifier or key may be this, because one that looks empty
    cannot be told from a missing one in a log, a URL or a shell."""
    return not text or text.isspace()


def check_not_blank(text: str, name: str) -> str:
    """`text` unless it is blank (see `is_blank`)."""
    if is_blank(text):
        raise InvalidInput(f"{name} must not be blank (empty or whitespace only)")
    return text


def check_id(value: object, name: str) -> str:
    """Identifiers (tenant, user, conversation, agent, space) are short printable strings."""
    text = check_not_blank(check_text(value, name, MAX_ID_CHARS), name)
    if _ID_FORBIDDEN.search(text):
        raise InvalidInput(f"{name} must not contain control characters")
    if text != text.strip():
        raise InvalidInput(f"{name} must not start or end with whitespace")
    return text


def check_embedding(vector: Sequence[float], dim: int, name: str = "embedding") -> list[float]:
    try:
        values = [float(x) for x in vector]
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a sequence of numbers") from None
    if len(values) != dim:
        raise InvalidInput(f"{name} has {len(values)} dimensions; the store is configured for {dim}")
    if not all(math.isfinite(x) for x in values):
        raise InvalidInput(f"{name} contains NaN or infinity")
    if not any(values):
        raise InvalidInput(f"{name} is the zero vector, which has no cosine similarity")
    return values


def check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidInput(f"priority must be an integer in [{PRIORITY_MIN}, {PRIORITY_MAX}]")
    return priority


# Offsets beyond this exist in no zone, and the graph (Neo4j, like java.time) refuses them.
MAX_UTC_OFFSET = timedelta(hours=18)


def check_utc_offset(value: datetime, *, name: str | None = None) -> datetime:
    """`value` unless its UTC offset is one no zone has."""
    offset = value.utcoffset()
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        raise InvalidInput(f"{name + ': ' if name else ''}UTC offset must be within -18:00 and +18:00")
    return value


def check_time(value: object, name: str) -> datetime:
    """A point in time with its UTC offset (a naive time would be compared against stored times
    in an unknown zone), the offset one a zone can have."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInput(f"{name} must be a datetime with a UTC offset")
    return check_utc_offset(value, name=name)


# The largest turn index a caller may give: the conversation's next index, one past it, is a
# 32-bit integer too.
MAX_TURN_INDEX = 2**31 - 2


def check_index(value: object, name: str, maximum: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidInput(f"{name} must be an integer in [0, {maximum}]")
    return value


def check_limit(value: object, name: str, maximum: int = 1000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(f"{name} must be an integer in [1, {maximum}]")
    return value


def check_unit_interval(value: float, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number") from None
    if not (0.0 <= value <= 1.0):  # also rejects NaN
        raise InvalidInput(f"{name} must be within [0, 1], got {value!r}")
    return value


def check_positive(value: float, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number") from None
    if not math.isfinite(number) or number <= 0:
        raise InvalidInput(f"{name} must be a positive finite number, got {value!r}")
    return number


def check_ttl(ttl_seconds: float | None, name: str = "ttl_seconds") -> float | None:
    return None if ttl_seconds is None else check_positive(ttl_seconds, name)


def check_json(value: Any, name: str) -> str:
    """Serialise `value` for a jsonb column: no NaN/inf (not JSON), no NUL (jsonb rejects it)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} is not JSON-serialisable: {exc}") from None
    if "\\u0000" in text:
        raise InvalidInput(f"{name} contains a NUL character, which Postgres jsonb cannot store")
    # A lone surrogate is escaped as \udXXX, which jsonb refuses unless it is half of a pair.
    if "\\ud" in text:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"{name} contains a lone surrogate and is not valid Unicode") from None
    return text
