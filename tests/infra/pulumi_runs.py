"""Running the Pulumi program under mocks, one process per run, and reading back what it registered.

Its own module (not conftest.py), so test modules can import it by a name no other test
directory uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from infra.policy.rules import normalize  # noqa: E402

HARNESS = Path(__file__).with_name("pulumi_harness.py")
STACKS = ("dev", "staging", "prod", "local")
# What an operator hands a shared stack besides its stack file, as `pulumi config set [--secret]`
# would: the image CI pushed, the token hashes and the alert receivers' URLs.
RELEASED_IMAGE = {"repository": "registry.example.com/memstack/memstack", "tag": "0.1.0"}
TOKEN_HASHES = "tenant-a sha256:" + "ab" * 32
RECEIVER_SECRETS = {"oncall": "mock-pagerduty-routing-key", "tickets": "https://hooks.slack.example/mock"}
DEPLOY_INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # stack: (--set overrides, --merge overrides)
    "dev": ((), (f"memstack:memoryService={json.dumps({'image': RELEASED_IMAGE})}",)),
    "staging": (
        (f"memstack:apiTokenHashes={TOKEN_HASHES}",),
        (f"memstack:memoryService={json.dumps({'image': RELEASED_IMAGE})}",),
    ),
    "prod": (
        (f"memstack:apiTokenHashes={TOKEN_HASHES}", f"memstack:alertReceiverSecrets={json.dumps(RECEIVER_SECRETS)}"),
        (f"memstack:memoryService={json.dumps({'image': RELEASED_IMAGE})}",),
    ),
    "local": ((), ()),
}
# A second production stack: the standby region (a Postgres replica cluster and nothing that writes).
DEPLOY_INPUTS["prod-dr"] = DEPLOY_INPUTS["prod"]
# API groups served by Kubernetes itself; everything else under `kubernetes:` is a custom resource.
CORE_GROUPS = {"core", "apps", "batch", "autoscaling", "policy", "networking.k8s.io", "rbac.authorization.k8s.io"}
RUN_TIMEOUT_SECONDS = 90


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str
    dependencies: list[str]
    delete_before_replace: bool
    ignore_changes: list[str]
    raw_inputs: dict[str, Any]

    @property
    def manifest(self) -> dict[str, Any]:
        return normalize(self.raw_inputs)

    @property
    def group(self) -> str:
        return self.type.split(":")[1].split("/")[0] if self.type.startswith("kubernetes:") else ""

    @property
    def kind(self) -> str:
        return self.type.rsplit(":", 1)[-1]

    @property
    def is_core_object(self) -> bool:
        return self.type.startswith("kubernetes:") and self.group in CORE_GROUPS

    @property
    def is_custom_resource(self) -> bool:
        return self.type.startswith("kubernetes:") and self.group not in CORE_GROUPS | {"helm.sh"}


@dataclass
class Run:
    """What one run of the program registered."""

    stack: str
    resources: list[Resource]
    outputs: dict[str, Any]
    error: dict[str, Any] | None
    by_urn: dict[str, Resource] = field(init=False)

    def __post_init__(self) -> None:
        self.by_urn = {r.urn: r for r in self.resources}

    def kinds(self, *kinds: str) -> list[Resource]:
        return [r for r in self.resources if r.type.startswith("kubernetes:") and r.kind in kinds]

    def one(self, kind: str, name: str) -> Resource:
        found = [r for r in self.kinds(kind) if r.manifest.get("metadata", {}).get("name") == name]
        assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
        return found[0]

    def release(self, release_name: str) -> Resource:
        found = [r for r in self.kinds("Release") if r.raw_inputs.get("name") == release_name]
        assert len(found) == 1, f"expected one Helm release {release_name}, found {len(found)}"
        return found[0]

    @property
    def core_objects(self) -> list[Resource]:
        return [r for r in self.resources if r.is_core_object]

    @property
    def manifests(self) -> list[dict[str, Any]]:
        """Everything the Kubernetes provider applies directly (Helm releases excluded)."""
        return [r.manifest for r in self.resources if r.type.startswith("kubernetes:") and r.group != "helm.sh"]

    def depends_on(self, resource: Resource, dependency: Resource) -> bool:
        return dependency.urn in resource.dependencies


def _load(path: Path) -> Run:
    data = json.loads(path.read_text())
    resources = [
        Resource(
            urn=r["urn"],
            type=r["type"],
            name=r["name"],
            custom=r["custom"],
            parent=r["parent"],
            dependencies=r["dependencies"],
            delete_before_replace=r["deleteBeforeReplace"],
            ignore_changes=r["ignoreChanges"],
            raw_inputs=r["inputs"],
        )
        for r in data["resources"]
    ]
    return Run(stack=data["stack"], resources=resources, outputs=data["outputs"], error=data["error"])


def _start(stack_file: Path, out: Path, overrides: Iterable[str], merges: Iterable[str] = ()) -> subprocess.Popen:
    command = [sys.executable, str(HARNESS), str(stack_file), str(out)]
    for override in overrides:
        command += ["--set", override]
    for merge in merges:
        command += ["--merge", merge]
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, out: Path) -> Run:
    output, _ = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    assert out.exists(), f"the harness wrote no result:\n{output.decode(errors='replace')}"
    return _load(out)


def deploy_values(stack: str) -> dict[str, Any]:
    """The `memstack:*` values the program receives for a stack: its file plus its deploy inputs."""
    from pulumi_harness import stack_config

    from infra.config import raw_project_config

    overrides, merges = DEPLOY_INPUTS[stack]
    return raw_project_config(stack_config(REPO_ROOT / f"Pulumi.{stack}.yaml", list(overrides), list(merges)))


def _program_runner(directory: Path) -> Callable[..., Run]:
    def execute(stack: str, *overrides: str, merges: Iterable[str] = (), bare: bool = False) -> Run:
        out = directory / f"{stack}-{len(list(directory.iterdir()))}.json"
        inputs, input_merges = ((), ()) if bare else DEPLOY_INPUTS[stack]
        return _finish(
            _start(REPO_ROOT / f"Pulumi.{stack}.yaml", out, (*inputs, *overrides), (*input_merges, *merges)), out
        )

    return execute


@dataclass
class ConfigCheck:
    """The outcome of reading a stack's config the way the program's first step does, in-process."""

    error: dict[str, Any] | None


def check_config(stack: str, *overrides: str, merges: Iterable[str] = (), bare: bool = False) -> ConfigCheck:
    """What `load_config` says about a stack file plus overrides (the same inputs `run_program` passes),
    without starting a Pulumi run: for tests about refused settings."""
    from pulumi_harness import stack_config

    from infra.config import ConfigError, load_config, raw_project_config

    inputs, input_merges = ((), ()) if bare else DEPLOY_INPUTS[stack]
    values = stack_config(REPO_ROOT / f"Pulumi.{stack}.yaml", [*inputs, *overrides], [*input_merges, *merges])
    try:
        load_config(raw_project_config(values))
    except ConfigError as error:
        return ConfigCheck({"type": "ConfigError", "message": str(error)})
    return ConfigCheck(None)
