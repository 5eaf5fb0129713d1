"""dosfs: a disk-objectstore compatible object store and a FUSE filesystem that mounts it."""

from importlib.metadata import PackageNotFoundError, version

from dosfs.container import (
    ClosingNotAllowed,
    CompressMode,
    Container,
    CorruptObject,
    DosfsError,
    InconsistentContent,
    InvalidContainer,
    InvalidHashKey,
    LockedError,
    ModificationNotAllowed,
    NotExistent,
    NotInitialised,
    ObjectMeta,
    ObjectReader,
    ObjectStream,
    ObjectType,
    StagedObject,
    ValidationIssues,
    ValidationReport,
)


def __getattr__(name: str) -> object:
    """RemoteContainer on first use only: `import dosfs` does not load the S3 client."""
    if name == "RemoteContainer":
        from dosfs.remote.container import RemoteContainer

        return RemoteContainer
    raise AttributeError(f"module 'dosfs' has no attribute {name!r}")


try:
    __version__ = version("dosfs")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "ClosingNotAllowed",
    "CompressMode",
    "Container",
    "CorruptObject",
    "DosfsError",
    "InconsistentContent",
    "InvalidContainer",
    "InvalidHashKey",
    "LockedError",
    "ModificationNotAllowed",
    "NotExistent",
    "NotInitialised",
    "ObjectMeta",
    "ObjectReader",
    "ObjectStream",
    "ObjectType",
    "RemoteContainer",
    "StagedObject",
    "ValidationIssues",
    "ValidationReport",
    "__version__",
]
