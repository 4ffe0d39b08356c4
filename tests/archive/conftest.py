"""Fixtures of the archive tests; the data builders live in archive_data.py (importable by name,
unlike a conftest, which the root tests/conftest.py shadows in a whole-suite run)."""

from archive_data import archive, damaged  # noqa: F401
