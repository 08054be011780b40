"""Running the box as an operator would: systemd integration, backup and restore, ``doctor``, the data-dir lock.

Nothing here is on a request path. Everything is plain functions called by
``molecule_box.cli``; the only piece inside the running box is
:mod:`.notify` (systemd's notify protocol) and :mod:`.lock` (one box per data
directory).
"""
