"""A server's resource limits against this node: the configured defaults for what a request left out, and
the limits this node cannot give."""

from __future__ import annotations

import os

from lightd.config import DockerConfig
from lightd.errors import ValidationFailed
from lightd.servers.models import ContainerSpec, Limits


def with_default_limits(spec: ContainerSpec, docker: DockerConfig) -> ContainerSpec:
    """`docker.default_limits` for every limit the spec left out."""
    defaults = docker.default_limits.model_dump()
    defaults["pids"] = defaults["pids"] or docker.pids_limit
    given = spec.limits.model_dump()
    filled = {key: defaults[key] if value is None else value for key, value in given.items()}
    return spec.model_copy(update={"limits": Limits.model_validate(filled)})


def check_node_limits(spec: ContainerSpec) -> None:
    """Limits this node cannot give: 400 naming the field (Docker would refuse them only later)."""
    cores = os.cpu_count() or 1
    if spec.limits.cpu is not None and not 0.01 <= spec.limits.cpu <= cores:
        raise ValidationFailed(f"limits.cpu: must be between 0.01 and {cores} (this node's CPUs)",
                               details={"field": "limits.cpu"})
