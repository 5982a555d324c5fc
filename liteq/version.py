"""liteq's version, in a module of its own so that any module can name it without
importing the ``liteq`` package (which imports everything)."""

__all__ = ["VERSION"]

#: The version of this liteq (the package's ``liteq.__version__``).
VERSION = "0.1.0"
