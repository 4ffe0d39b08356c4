"""A module that fails while it is imported (a bug in user code)."""

raise ImportError("no module named 'sympy_nonexistent' (needed by this reward module)")
