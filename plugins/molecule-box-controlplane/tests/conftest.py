"""The fixtures of ``cp_support``, for every test module here."""

from cp_support import box_factory, emulator  # noqa: F401
