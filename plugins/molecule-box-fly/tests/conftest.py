"""The fixtures live in ``flyutil`` (importable by the tests, which a conftest is not meant to be)."""

from flyutil import box_of, docker_fly, fly

__all__ = ["box_of", "docker_fly", "fly"]
