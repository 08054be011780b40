"""molecule-box backend ``controlplane``: workspaces provisioned by the Molecule control plane.

The box talks to the control plane exactly as the platform's tenant side does (the same routes, headers and
bodies), and goes further where the platform failed: deprovision's answer is checked and retried, it is
called on delete, and instances the box no longer claims are reconciled away.
"""

from __future__ import annotations

__version__ = "0.1.0"
