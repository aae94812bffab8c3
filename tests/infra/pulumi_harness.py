"""Run the memstack Pulumi program once under Pulumi mocks and write what it registered as JSON.

    python tests/infra/pulumi_harness.py STACK_FILE OUT_JSON [--set memstack:key=JSON ...] [--merge memstack:key=JSON ...]

`--set` replaces a key's value, as `pulumi config set key` does; `--merge` merges a JSON object
into the key's object, as `pulumi config set --path key.sub` does.

The stack's config reaches the program the way the Pulumi CLI hands it over: the
`PULUMI_CONFIG` environment variable, every value a string. Mock state is global to a
process, so the tests start one process per stack run; runs cannot leak into each other.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "memstack"


def _merged(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{key: _merged(base.get(key), value) for key, value in extra.items()}}
    return extra


def stack_config(stack_file: Path, overrides: list[str], merges: list[str] = ()) -> dict[str, str]:
    document = yaml.safe_load(stack_file.read_text()) or {}
    values: dict[str, Any] = dict(document.get("config") or {})
    for merge in merges:
        key, _, value = merge.partition("=")
        values[key] = _merged(values.get(key), json.loads(value))
    config = {key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()}
    for override in overrides:
        key, _, value = override.partition("=")
        config[key] = value
    return config


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("stack_file", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--merge", dest="merges", action="append", default=[])
    options = parser.parse_args()
    stack = options.stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    os.environ["PULUMI_CONFIG"] = json.dumps(stack_config(options.stack_file, options.overrides, options.merges))

    import pulumi
    from pulumi.runtime import mocks as pulumi_mocks
    from pulumi.runtime import rpc
    from pulumi.runtime.settings import set_root_resource
    from pulumi.runtime.stack import run_in_stack
    from pulumi.runtime.sync_await import _sync_await

    registered: list[dict[str, Any]] = []
    stack_outputs: dict[str, Any] = {}

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
            state = dict(args.inputs)
            if args.typ == "random:index/randomPassword:RandomPassword":
                state["result"] = f"mock-{args.name}-value"
            if args.typ == "kubernetes:helm.sh/v3:Release":
                state["status"] = {
                    "name": args.inputs.get("name"),
                    "namespace": args.inputs.get("namespace"),
                    "status": "deployed",
                }
            return f"{args.name}-id", state

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, None]:
            raise AssertionError(f"the program made an unexpected call: {args.token}")

    class RecordingMonitor(pulumi_mocks.MockMonitor):
        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            registered.append(
                {
                    "urn": response.urn,
                    "type": request.type,
                    "name": request.name,
                    "custom": bool(request.custom),
                    "parent": request.parent,
                    "dependencies": list(request.dependencies),
                    "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                    "ignoreChanges": list(request.ignoreChanges),
                    "inputs": rpc.deserialize_properties(request.object),
                }
            )
            return response

        def RegisterResourceOutputs(self, request):
            if request.urn.endswith("pulumi:pulumi:Stack::" + f"{PROJECT}-{stack}"):
                stack_outputs.update(rpc.deserialize_properties(request.outputs))
            return super().RegisterResourceOutputs(request)

    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=RecordingMonitor(mocks))
    # set_mocks registered a root Stack; run_in_stack registers the program's own, as the CLI does.
    set_root_resource(None)
    error = None
    try:
        _sync_await(run_in_stack(lambda: runpy.run_path(str(REPO_ROOT / "infra"), run_name="__main__")))
    except Exception as exc:
        error = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
    options.out.write_text(
        json.dumps({"stack": stack, "resources": registered, "outputs": stack_outputs, "error": error}, default=repr)
    )
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
