"""Default results directories live under the stack's home, wherever the command runs."""

from __future__ import annotations

from memstack import load as load_runner
from memstack.capacity.commands import new_results_dir


def test_default_results_dirs_are_under_memstack_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MEMSTACK_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert load_runner.LoadOptions().results == home / "load"
    assert load_runner.new_results_dir("load").parent == home / "load"
    assert new_results_dir(None).parent == home / "capacity"
    assert load_runner.results_home("snapshots") == home / "snapshots"
