"""Workload backends: the contract (``base``), discovery (``loader``) and the built-in ``external``."""

from .base import (
    CONTRACT_VERSION,
    Backend,
    BackendContext,
    BackendEvent,
    BaseBackend,
    Capabilities,
    Handle,
    Workload,
    WorkloadSpec,
    WorkloadState,
    WorkloadStatus,
)

__all__ = [
    "CONTRACT_VERSION",
    "Backend",
    "BackendContext",
    "BackendEvent",
    "BaseBackend",
    "Capabilities",
    "Handle",
    "Workload",
    "WorkloadSpec",
    "WorkloadState",
    "WorkloadStatus",
]
