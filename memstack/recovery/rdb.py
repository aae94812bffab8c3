"""The expiry times in a Redis RDB snapshot, read from the file itself.

A key whose expiry passes after the backup is dropped when Redis loads the snapshot (or soon
after, by its expiry cycle), so a restore has fewer keys than the snapshot and the number
depends on when it runs. `backup` records, from the snapshot's own bytes, how many keys have no
expiry and how many expire in each minute; `backup verify` then knows which keys must still be
there at the time it counts. The reader walks the file's records (RDB versions up to 11, Redis
7.x) and skips values without decoding them; a module type it cannot skip stops it
(RdbUnreadable), and the caller does without the histogram.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path
from typing import BinaryIO

BUCKET_S = 60

_AUX, _RESIZEDB, _EXPIRE_MS, _EXPIRE_S, _SELECTDB, _EOF = 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF
_IDLE, _FREQ, _MODULE_AUX, _FUNCTION, _FUNCTION2 = 0xF8, 0xF9, 0xF7, 0xF6, 0xF5
# Value types stored as one string (ziplist, listpack, intset encodings).
_ONE_STRING = {0, 9, 10, 11, 12, 13, 16, 17, 20}


class RdbUnreadable(Exception):
    pass


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def bytes(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise RdbUnreadable("the snapshot ends early")
        return data

    def skip(self, n: int) -> None:
        self.f.seek(n, 1)

    def byte(self) -> int:
        return self.bytes(1)[0]

    def length(self) -> tuple[int, bool]:
        """A length, and whether it is an encoded-string marker rather than a length."""
        first = self.byte()
        kind = first >> 6
        if kind == 0:
            return first & 0x3F, False
        if kind == 1:
            return ((first & 0x3F) << 8) | self.byte(), False
        if kind == 3:
            return first & 0x3F, True
        if first == 0x80:
            return struct.unpack(">I", self.bytes(4))[0], False
        if first == 0x81:
            return struct.unpack(">Q", self.bytes(8))[0], False
        raise RdbUnreadable(f"unknown length encoding {first:#x}")

    def number(self) -> int:
        n, encoded = self.length()
        if encoded:
            raise RdbUnreadable("an encoded string where a length belongs")
        return n

    def skip_string(self) -> None:
        n, encoded = self.length()
        if not encoded:
            self.skip(n)
        elif n in (0, 1, 2):  # an 8, 16 or 32 bit integer
            self.skip(1 << n)
        elif n == 3:  # LZF: compressed length, original length, compressed bytes
            compressed = self.number()
            self.number()
            self.skip(compressed)
        else:
            raise RdbUnreadable(f"unknown string encoding {n}")

    def skip_value(self, kind: int) -> None:
        if kind in _ONE_STRING:
            self.skip_string()
        elif kind in (1, 2, 14):  # list, set, quicklist: strings
            for _ in range(self.number()):
                self.skip_string()
        elif kind == 18:  # quicklist 2: container kind, then a string per node
            for _ in range(self.number()):
                self.number()
                self.skip_string()
        elif kind == 4:  # hash: field and value strings
            for _ in range(2 * self.number()):
                self.skip_string()
        elif kind == 3:  # sorted set, scores as text
            for _ in range(self.number()):
                self.skip_string()
                n = self.byte()
                if n < 253:
                    self.skip(n)
        elif kind == 5:  # sorted set, scores as binary doubles
            for _ in range(self.number()):
                self.skip_string()
                self.skip(8)
        elif kind in (15, 19, 21):
            self._skip_stream(kind)
        else:
            raise RdbUnreadable(f"value type {kind} (a module's?) cannot be skipped")

    def _skip_stream(self, kind: int) -> None:
        for _ in range(self.number()):  # listpacks: master id, listpack
            self.skip_string()
            self.skip_string()
        self.number()  # length
        self.number()  # last id: ms, seq
        self.number()
        if kind >= 19:
            for _ in range(5):  # first id, max deleted id, entries added
                self.number()
        for _ in range(self.number()):  # consumer groups
            self.skip_string()
            self.number()
            self.number()
            if kind >= 19:
                self.number()  # entries read
            for _ in range(self.number()):  # pending entries: id, delivery time, count
                self.skip(16 + 8)
                self.number()
            for _ in range(self.number()):  # consumers
                self.skip_string()
                self.skip(8 if kind < 21 else 16)  # seen time (and active time)
                for _ in range(self.number()):
                    self.skip(16)


def expiries(path: Path) -> tuple[int, int, Counter[int]]:
    """(keys, keys without an expiry, {start of a BUCKET_S window in epoch seconds: keys
    expiring in it}) of the snapshot at `path`."""
    keys = persistent = 0
    buckets: Counter[int] = Counter()
    with open(path, "rb") as f:
        r = _Reader(f)
        if r.bytes(5) != b"REDIS":
            raise RdbUnreadable("not an RDB file")
        version = int(r.bytes(4))
        if version > 11:
            raise RdbUnreadable(f"RDB version {version} is newer than this reader")
        expire_ms: int | None = None
        while True:
            op = r.byte()
            if op == _EOF:
                return keys, persistent, buckets
            if op == _AUX:
                r.skip_string()
                r.skip_string()
            elif op == _SELECTDB:
                r.number()
            elif op == _RESIZEDB:
                r.number()
                r.number()
            elif op == _EXPIRE_MS:
                expire_ms = struct.unpack("<q", r.bytes(8))[0]
            elif op == _EXPIRE_S:
                expire_ms = struct.unpack("<i", r.bytes(4))[0] * 1000
            elif op == _IDLE:
                r.number()
            elif op == _FREQ:
                r.byte()
            elif op in (_FUNCTION, _FUNCTION2):
                r.skip_string()
            elif op == _MODULE_AUX:
                raise RdbUnreadable("module data cannot be skipped")
            else:
                r.skip_string()  # the key
                r.skip_value(op)
                keys += 1
                if expire_ms is None:
                    persistent += 1
                else:
                    second = expire_ms // 1000
                    buckets[second - second % BUCKET_S] += 1
                expire_ms = None
