"""The rules of `rules.py`, wrapped as `pulumi_policy` policies."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy.rules import OBJECT_RULES, STACK_RULES, ObjectRule, StackRule, normalize

PACK_NAME = "memstack-kubernetes"


def is_kubernetes_object(resource_type: str) -> bool:
    """Objects the Kubernetes provider applies; a Helm release is not one (its contents are not visible)."""
    return resource_type.startswith("kubernetes:") and not resource_type.startswith("kubernetes:helm.sh/")


def _summary(rule: ObjectRule | StackRule) -> str:
    return (rule.__doc__ or rule.__name__).strip().splitlines()[0]


def object_policy(name: str, rule: ObjectRule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if is_kubernetes_object(args.resource_type):
            for message in rule(normalize(args.props)):
                report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=_summary(rule), validate=validate)


def stack_policy(name: str, rule: StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        manifests = [normalize(r.props) for r in args.resources if is_kubernetes_object(r.resource_type)]
        for message in rule(manifests):
            report_violation(message, None)

    return StackValidationPolicy(name=name, description=_summary(rule), validate=validate)


def build_policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    return [object_policy(name, rule) for name, rule in OBJECT_RULES.items()] + [
        stack_policy(name, rule) for name, rule in STACK_RULES.items()
    ]


ENFORCEMENT = EnforcementLevel.MANDATORY
