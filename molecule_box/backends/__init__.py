"""Workload backends: the contract (``base``, with ``options``), discovery (``loader``) and the built-in
``external``."""

from .base import (
    CONTRACT_VERSION,
    Backend,
    BackendContext,
    BackendError,
    BackendEvent,
    BackendNotInstalled,
    BackendSettings,
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
    "BackendError",
    "BackendEvent",
    "BackendNotInstalled",
    "BackendSettings",
    "BaseBackend",
    "Capabilities",
    "Handle",
    "Workload",
    "WorkloadSpec",
    "WorkloadState",
    "WorkloadStatus",
]
