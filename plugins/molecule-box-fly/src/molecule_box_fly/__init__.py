"""Fly Machines as a molecule-box backend (``flyio``), and an emulator of the Machines API to test it against."""

from .backend import FlyBackend
from .settings import FlySettings

__all__ = ["FlyBackend", "FlySettings"]
