"""The version of tks_kernels, in one place (pyproject.toml reads it)."""
__version__ = "0.2.0"
