"""A path in a directory that is not there is refused in one line, not made (a mistyped
directory silently created is a file nobody finds); a failed snapshot leaves no empty directory."""

from __future__ import annotations

import socket

from test_cli_errors import assert_one_line_error, run


def test_token_create_refuses_a_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    result = run(tmp_path / "home", "token", "create", "--tenant", "acme", "--file", str(missing / "x"))
    assert_one_line_error(result, f"no such directory {missing}")
    assert not missing.exists()


def test_token_create_makes_the_home_for_its_default_file(tmp_path):
    home = tmp_path / "home"
    result = run(home, "token", "create", "--tenant", "acme")
    assert result.returncode == 0, result.stderr
    assert (home / "tokens").read_text().strip().endswith(" acme")


def test_drill_json_refuses_a_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    result = run(tmp_path / "home", "drill", "--json", str(missing / "x.json"))
    assert_one_line_error(result, "--json", f"no such directory {missing}")
    assert not missing.exists()


def test_a_failed_snapshot_leaves_no_directory(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path / "home"
    result = run(home, "dashboards", "snapshot", "--prometheus-url", f"http://127.0.0.1:{port}")
    assert_one_line_error(result, "does not answer")
    snapshots = home / "snapshots"
    assert not snapshots.exists() or list(snapshots.iterdir()) == []
