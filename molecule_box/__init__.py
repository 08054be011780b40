"""molecule-box: the Molecule AI workspace server as one trio process for one box.

Public API (everything else is private to its package). The names are loaded on first use (PEP 562), so
``import molecule_box.backends.base``, which a plugin does, loads the backend contract and not the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: Public name → the module that defines it.
_EXPORTS = {
    "CONTRACT_VERSION": ".backends.base",
    "Backend": ".backends.base",
    "BackendContext": ".backends.base",
    "BackendError": ".backends.base",
    "BackendEvent": ".backends.base",
    "BackendSettings": ".backends.base",
    "BaseBackend": ".backends.base",
    "Capabilities": ".backends.base",
    "Setting": ".backends.base",
    "option": ".backends.base",
    "Workload": ".backends.base",
    "WorkloadSpec": ".backends.base",
    "WorkloadState": ".backends.base",
    "WorkloadStatus": ".backends.base",
    "Box": ".box",
    "open_box": ".box",
    "serve": ".box",
    "Settings": ".config",
    "ConfigError": ".errors",
    "HTTPError": ".errors",
    "MoleculeBoxError": ".errors",
    "WorkspaceStatus": ".models",
}

__all__ = [
    "CONTRACT_VERSION",
    "Backend",
    "BackendContext",
    "BackendError",
    "BackendEvent",
    "BackendSettings",
    "BaseBackend",
    "Box",
    "Capabilities",
    "ConfigError",
    "HTTPError",
    "MoleculeBoxError",
    "Setting",
    "Settings",
    "Workload",
    "WorkloadSpec",
    "WorkloadState",
    "WorkloadStatus",
    "WorkspaceStatus",
    "__version__",
    "open_box",
    "option",
    "serve",
]

if TYPE_CHECKING:
    from .backends.base import (
        CONTRACT_VERSION,
        Backend,
        BackendContext,
        BackendError,
        BackendEvent,
        BackendSettings,
        BaseBackend,
        Capabilities,
        Setting,
        Workload,
        WorkloadSpec,
        WorkloadState,
        WorkloadStatus,
        option,
    )
    from .box import Box, open_box, serve
    from .config import Settings
    from .errors import ConfigError, HTTPError, MoleculeBoxError
    from .models import WorkspaceStatus


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
