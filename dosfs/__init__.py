"""dosfs: a disk-objectstore compatible object store and a FUSE filesystem that mounts it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dosfs")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
