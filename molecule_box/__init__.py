"""molecule-box: the Molecule AI workspace server as one trio process for one box.

Public API (everything else is private to its package):
"""

__version__ = "0.1.0"

from .backends.base import (  # noqa: E402
    CONTRACT_VERSION,
    Backend,
    BackendContext,
    BackendEvent,
    BaseBackend,
    Capabilities,
    Workload,
    WorkloadSpec,
    WorkloadState,
    WorkloadStatus,
)
from .box import Box, open_box, serve  # noqa: E402
from .config import Settings  # noqa: E402
from .errors import BackendError, ConfigError, HTTPError, MoleculeBoxError  # noqa: E402
from .models import WorkspaceStatus  # noqa: E402

__all__ = [
    "CONTRACT_VERSION",
    "Backend",
    "BackendContext",
    "BackendError",
    "BackendEvent",
    "BaseBackend",
    "Box",
    "Capabilities",
    "ConfigError",
    "HTTPError",
    "MoleculeBoxError",
    "Settings",
    "Workload",
    "WorkloadSpec",
    "WorkloadState",
    "WorkloadStatus",
    "WorkspaceStatus",
    "__version__",
    "open_box",
    "serve",
]
