"""Bearer tokens map to tenants; only their hashes are stored.

Hash file format, one token per line (`#` comments and blank lines allowed):
    sha256:<64 hex digits> <tenant id>

Why a plain SHA-256 and not a slow password hash: tokens are 256 random bits made by
`new_token()`, so no dictionary or brute-force attack on a leaked hash is feasible; slow KDFs
only protect low-entropy secrets. A fast hash lets every request be checked with one dict
lookup on the hash. That lookup is constant-time with respect to the token: timing can only
reveal something about the hash of what the caller sent, never about a stored token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from pathlib import Path

from ..validation import check_id
from .config import ServiceSettings

log = logging.getLogger(__name__)
TOKEN_PREFIX = "mst_"
_LINE = re.compile(r"^sha256:([0-9a-f]{64}) (.+)$")


class TokenFileError(ValueError):
    """A token hash line is malformed; the message names the source and line."""


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_line(tenant_id: str, token: str) -> str:
    return f"sha256:{token_hash(token)} {check_id(tenant_id, 'tenant')}"


# Tokens seen recently, to their tenant: a request then costs one dict lookup, not a SHA-256
# and a hex encoding. Bounded, so a client sending ever new unknown tokens cannot grow it;
# unknown tokens are not kept at all.
_RECENT_TOKENS = 4096


def bearer_token(header: bytes) -> str | None:
    """The token of an `Authorization: Bearer <token>` header's raw value; None for another
    scheme or no token."""
    scheme, _, token = header.decode("latin-1").partition(" ")
    token = token.strip()
    if not token or scheme.lower() != "bearer":
        return None
    return token


class TokenTable:
    def __init__(self, tenants_by_hash: dict[str, str]):
        self._tenants_by_hash = tenants_by_hash
        self._recent: dict[str, str] = {}
        # The same, by the whole Authorization header as the server received it.
        self._recent_headers: dict[bytes, str] = {}
        # mtime and size of the tokens file as it was before it was read; the watcher compares.
        self.file_stamp: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self._tenants_by_hash)

    @classmethod
    def parse(cls, text: str, source: str) -> TokenTable:
        table: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            match = _LINE.match(line)
            if match is None:
                raise TokenFileError(f"{source}:{number}: expected 'sha256:<64 hex> <tenant>'")
            try:
                table[match.group(1)] = check_id(match.group(2), "tenant")
            except ValueError as exc:
                raise TokenFileError(f"{source}:{number}: {exc}") from None
        return cls(table)

    @classmethod
    def load(cls, settings: ServiceSettings) -> TokenTable:
        """Tokens from MEMSTACK_TOKENS_FILE and MEMSTACK_TOKENS together; neither set means none.
        A tokens file that does not exist (yet) holds none: the watcher reads it once it does,
        so a service started before the first `memstack token create` takes that token."""
        table = cls({})
        if settings.tokens_file is not None:
            table.file_stamp = _stamp(settings.tokens_file)
            try:
                text = settings.tokens_file.read_text()
            except FileNotFoundError:
                text = ""
            except OSError as exc:
                raise TokenFileError(f"cannot read tokens file {settings.tokens_file}: {exc.strerror}") from None
            table._tenants_by_hash.update(cls.parse(text, str(settings.tokens_file))._tenants_by_hash)
        if settings.tokens is not None:
            table._tenants_by_hash.update(
                cls.parse(settings.tokens.get_secret_value(), "MEMSTACK_TOKENS")._tenants_by_hash
            )
        return table

    def replace(self, other: TokenTable) -> None:
        # A revoked token must stop working with the new table: the recent ones are forgotten too.
        self._tenants_by_hash, self._recent, self._recent_headers = other._tenants_by_hash, {}, {}
        self.file_stamp = other.file_stamp

    def tenant_for(self, token: str) -> str | None:
        tenant = self._recent.get(token)
        if tenant is None:
            tenant = self._tenants_by_hash.get(token_hash(token))
            if tenant is not None:
                if len(self._recent) >= _RECENT_TOKENS:
                    self._recent.clear()
                self._recent[token] = tenant
        return tenant

    def tenant_for_authorization(self, header: bytes) -> str | None:
        """The tenant of an `Authorization: Bearer <token>` header's raw value, or None (another
        scheme, no token, an unknown one). A header seen recently costs one dict lookup."""
        tenant = self._recent_headers.get(header)
        if tenant is None:
            token = bearer_token(header)
            if token is None:
                return None
            tenant = self.tenant_for(token)
            if tenant is not None:
                if len(self._recent_headers) >= _RECENT_TOKENS:
                    self._recent_headers.clear()
                self._recent_headers[header] = tenant
        return tenant


async def watch_tokens_file(table: TokenTable, settings: ServiceSettings, interval_s: float = 5.0) -> None:
    """Reload `table` when the tokens file changes (a Kubernetes Secret update swaps it in place).
    A file that fails to parse leaves the previous tokens in force."""
    path = settings.tokens_file
    if path is None:
        return
    seen = table.file_stamp
    while True:
        await asyncio.sleep(interval_s)
        stamp = _stamp(path)
        if stamp == seen:
            continue
        seen = stamp
        try:
            table.replace(TokenTable.load(settings))
            log.info("reloaded %d token(s) from %s", len(table), path)
        except TokenFileError as exc:
            log.error("keeping the previous tokens: %s", exc)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
