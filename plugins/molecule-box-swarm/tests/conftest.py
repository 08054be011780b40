"""The fixtures live in ``swarmutil`` (importable by the tests, which a conftest is not meant to be)."""

from swarmutil import box_of, swarm

__all__ = ["box_of", "swarm"]
