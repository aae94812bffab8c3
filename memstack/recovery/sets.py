"""Backup sets on disk: where they live, their manifest, and the checksums that guard them.

A set is a directory `<sets dir>/<id>/` holding `manifest.json` and one sub-directory per
store. The manifest lists every file with its size and sha256, the position of each store
(WAL LSNs, last outbox id, Redis last save time) and the time.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memstack.errors import MemstackError

MANIFEST = "manifest.json"
SETS_DIR_ENV = "MEMSTACK_BACKUP_DIR"
FORMAT_VERSION = 1


def default_sets_dir(home: Path) -> Path:
    configured = os.environ.get(SETS_DIR_ENV)
    return Path(configured).resolve() if configured else home / "backups" / "sets"


def new_id(now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(2)}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(root: Path) -> list[dict[str, Any]]:
    return [
        {"path": str(p.relative_to(root)), "bytes": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    ]


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, root / MANIFEST)


def set_path(sets_dir: Path, backup_id: str) -> Path:
    # An id is a name in the sets directory, never a path out of it.
    if not backup_id or "/" in backup_id or backup_id.startswith("."):
        raise MemstackError(f"unknown backup id {backup_id!r}: `memstack backup list` shows the ids")
    return sets_dir / backup_id


def load(sets_dir: Path, backup_id: str) -> dict[str, Any]:
    path = set_path(sets_dir, backup_id) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise MemstackError(
            f"unknown backup id {backup_id!r} in {sets_dir}: `memstack backup list` shows the ids"
        ) from None
    except ValueError:
        raise MemstackError(f"backup {backup_id}: {path} is not valid JSON") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise MemstackError(f"backup {backup_id}: manifest format {manifest.get('format')!r} is not {FORMAT_VERSION}")
    return manifest


def all_sets(sets_dir: Path) -> list[dict[str, Any]]:
    found = []
    if sets_dir.is_dir():
        for child in sorted(sets_dir.iterdir()):
            if (child / MANIFEST).is_file() and not child.name.endswith(".partial"):
                try:
                    found.append(load(sets_dir, child.name))
                except MemstackError:
                    continue
    return found


def check_files(sets_dir: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is there with its size and sha256, or MemstackError naming
    the first that is not."""
    root = set_path(sets_dir, manifest["id"])
    for entry in manifest["files"]:
        path = root / entry["path"]
        if not path.is_file():
            raise MemstackError(f"backup {manifest['id']}: {entry['path']} is missing")
        if path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
            raise MemstackError(f"backup {manifest['id']}: checksum mismatch in {entry['path']}; the set is damaged")
