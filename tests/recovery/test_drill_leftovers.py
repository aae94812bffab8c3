"""What a drill round leaves on disk (its stores' data moved aside, its backup set): removed once
the round passed, kept (and said where) when it failed or with --keep; nothing else touched."""

from __future__ import annotations

import pytest

from memstack.recovery.drill import DrillOptions, _clear_leftovers
from memstack.recovery.stack import LocalStack


@pytest.fixture
def round_on_disk(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMSTACK_BACKUP_DIR", raising=False)
    home = tmp_path / "home"
    disaster = home / "attic" / "disaster-20260101T000000.000000Z"
    for name in ("redis", "postgres"):
        (disaster / name).mkdir(parents=True)
        (disaster / name / "data").write_text("x")
    other = home / "attic" / "20250101T000000.000000Z"  # an earlier restore's: not the round's
    other.mkdir(parents=True)
    backup_set = home / "backups" / "sets" / "20260101T000000Z-abcd"
    backup_set.mkdir(parents=True)
    older_set = home / "backups" / "sets" / "20250101T000000Z-0000"
    older_set.mkdir(parents=True)
    result = {
        "round": 1,
        "passed": True,
        "backup_id": backup_set.name,
        "moved_aside": {"redis": str(disaster / "redis"), "postgres": str(disaster / "postgres"), "neo4j": "None"},
        "restore": {"moved_aside": {}},
    }
    return LocalStack(home), result, [disaster, backup_set], [other, older_set]


def test_a_passed_round_s_leftovers_are_removed(round_on_disk):
    stack, result, own, others = round_on_disk
    said: list[str] = []
    leftovers = _clear_leftovers(stack, result, DrillOptions(rounds=1), said.append)
    assert sorted(leftovers["removed"]) == sorted(str(p.resolve()) for p in own)
    assert not any(p.exists() for p in own) and all(p.exists() for p in others)
    assert said == ["round 1/1: passed; removed its data moved aside and its backup set (2 directories)"]


@pytest.mark.parametrize("passed,keep,why", [(False, False, "failed"), (True, True, "--keep")])
def test_a_failed_round_or_keep_keeps_them_and_says_where(round_on_disk, passed, keep, why):
    stack, result, own, others = round_on_disk
    result["passed"] = passed
    said: list[str] = []
    leftovers = _clear_leftovers(stack, result, DrillOptions(rounds=1, keep=keep), said.append)
    assert all(p.exists() for p in [*own, *others])
    assert sorted(leftovers["kept"]) == sorted(str(p.resolve()) for p in own)
    assert said[0].startswith(f"round 1/1: {why}: kept for inspection: ") and str(own[1].resolve()) in said[0]
