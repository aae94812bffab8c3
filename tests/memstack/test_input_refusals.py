"""More bad input refused up front: exit 2 and one line on stderr naming the problem, before
anything is started, waited for or saved."""

from __future__ import annotations

from test_cli_errors import assert_one_line_error, run

from memstack.load import free_port
from memstack.local.state import StackState, save


def test_an_unknown_embedding_provider_is_refused(tmp_path):
    # No store is needed to tell: the refusal comes before any connection.
    for variable in ("EMBEDDING_PROVIDER", "MEMORY_EMBEDDING_PROVIDER"):
        result = run(tmp_path, "migrate", **{variable: "nosuch"})
        assert_one_line_error(result, "EMBEDDING_PROVIDER", "hashing")


def test_up_refuses_to_move_a_running_service_to_another_port(stack):
    running_on = stack.backend.status()
    redis_port = int(stack.redis_url.rsplit(":", 1)[1].split("/")[0])
    other = free_port()
    result = run(stack.home, "up", "--port", f"redis={other}")
    assert_one_line_error(result, "redis", f"port {redis_port}", "memstack down")
    # Nothing moved.
    assert stack.backend.endpoints().redis_url == stack.redis_url
    assert [row.running for row in stack.backend.status()] == [row.running for row in running_on]


def test_an_unusable_wal_dir_is_refused_before_it_is_saved(tmp_path):
    result = run(tmp_path, "up", "--wal-dir", "/proc/nope")
    assert_one_line_error(result, "/proc/nope", "--wal-dir")
    state = tmp_path / "state.json"
    # Saved, the path would break every later start of Postgres in this home.
    assert not state.exists() or "/proc/nope" not in state.read_text()


def test_load_refuses_a_missing_tokens_file_before_waiting_for_the_service(tmp_path):
    # Nothing listens at the URL: without the check up front, this waits, then names the service.
    url = f"http://127.0.0.1:{free_port()}"
    result = run(tmp_path, "load", "--url", url, "--tokens-file", "/nonexistent", "--results", str(tmp_path / "r"))
    assert_one_line_error(result, "--tokens-file /nonexistent")
    empty = tmp_path / "tokens"
    empty.write_text("# nothing\n")
    result = run(tmp_path, "load", "--url", url, "--tokens-file", str(empty), "--results", str(tmp_path / "r"))
    assert_one_line_error(result, "--tokens-file", "'<tenant> <token>'")


def test_load_refuses_a_url_that_is_not_http(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("t1 secret\n")
    for url in ("ftp://x", "localhost:8080", "http://"):
        result = run(tmp_path, "load", "--url", url, "--tokens-file", str(tokens), "--results", str(tmp_path / "r"))
        assert_one_line_error(result, "--url", repr(url))


def test_load_and_measure_refuse_gates_out_of_range(tmp_path):
    for command in (["load"], ["capacity", "measure"]):
        for option, value, words in (
            ("--wm-p99-ms", "-1", "must be above 0"),
            ("--wm-p99-ms", "inf", "finite"),
            ("--max-failure-ratio", "2", "between 0 and 1"),
            ("--max-failure-ratio", "nan", "finite"),
            ("--tokens-file", "/etc/hosts", "only read with --url"),
        ):
            assert_one_line_error(run(tmp_path, *command, option, value), option, words)
    assert_one_line_error(run(tmp_path, "load", "--rate", "inf"), "--rate", "finite")
    assert_one_line_error(run(tmp_path, "capacity", "measure", "--step-s", "inf"), "--step-s", "finite")


def test_snapshot_refuses_a_prometheus_url_that_is_not_http(tmp_path):
    result = run(tmp_path, "dashboards", "snapshot", "--prometheus-url", "notaurl")
    assert_one_line_error(result, "--prometheus-url", "'notaurl'")


def test_another_backend_is_told_which_stack_the_home_holds(tmp_path):
    save(tmp_path, StackState(backend="process"))
    for command in (["status"], ["up"]):
        result = run(tmp_path, *command, "--backend", "containers")
        assert_one_line_error(result, f"{tmp_path} holds a 'process' stack", "memstack down --backend process")


def test_without_backend_named_the_home_s_own_is_used(tmp_path):
    save(tmp_path, StackState(backend="containers"))
    # The containers backend is the one that runs: it asks for its engine, instead of the
    # process backend refusing a home that holds a containers stack.
    result = run(tmp_path, "status", DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    assert_one_line_error(result, "containers", "Docker engine")


def test_output_paths_are_refused_before_any_work(tmp_path):
    # No stack runs in this home: the path is what is refused, not the missing stack.
    assert_one_line_error(run(tmp_path, "drill", "--json", "/proc/nope/x.json"), "--json /proc/nope/x.json")
    assert_one_line_error(run(tmp_path, "drill", "--json", str(tmp_path)), "--json", "Is a directory")
    assert_one_line_error(run(tmp_path, "backup", "--to", "/proc/nope"), "--to /proc/nope")


def test_backup_list_names_a_missing_dir_and_an_unreadable_set(tmp_path):
    assert_one_line_error(run(tmp_path, "backup", "list", "--dir", "/nonexistent"), "--dir /nonexistent")
    broken = tmp_path / "sets" / "20260101T000000Z-abcd"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    result = run(tmp_path, "backup", "list", "--dir", str(tmp_path / "sets"))
    assert result.returncode == 0, result.stderr
    assert "20260101T000000Z-abcd" in result.stdout and "UNREADABLE" in result.stdout
    assert "not valid JSON" in result.stderr
