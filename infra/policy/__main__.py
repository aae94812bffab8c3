"""`pulumi preview --policy-pack infra/policy`: serve the memstack policy pack to the Pulumi engine."""

import sys
from pathlib import Path

# The repository root, so that `infra.policy` imports as a package, as it does in the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pulumi_policy import PolicyPack

from infra.policy.pack import ENFORCEMENT, PACK_NAME, build_policies

PolicyPack(name=PACK_NAME, enforcement_level=ENFORCEMENT, policies=build_policies())
