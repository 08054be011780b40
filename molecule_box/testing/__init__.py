"""The backend conformance kit: the contract of :mod:`molecule_box.backends.base` as executable tests.

A backend plugin runs it against itself by subclassing :class:`BackendConformance`
in its own test suite and providing a ``backend_factory`` fixture::

    import pytest
    from molecule_box.testing import BackendConformance
    from my_plugin import MyBackend

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend_factory(self):
            return MyBackend

The kit is installed as the ``molecule_box`` pytest plugin (entry point
``pytest11``), so its fixtures are available in any project that installs
molecule-box; tests are async and need pytest-trio (``trio_mode = true``).
"""

from .conformance import BackendConformance, make_spec

__all__ = ["BackendConformance", "make_spec"]
