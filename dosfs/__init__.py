"""dosfs: a disk-objectstore compatible object store and a FUSE filesystem that mounts it."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names for type checkers; at run time __getattr__ below
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
    from dosfs.remote.container import RemoteContainer

#: what `dosfs` exports from dosfs.container, imported on first use (PEP 562): `dosfs mount`
#: and `dosfs umount` never need the engine in the command's process (~90 ms of its start)
_FROM_CONTAINER = frozenset({
    "ClosingNotAllowed", "CompressMode", "Container", "CorruptObject", "DosfsError",
    "InconsistentContent", "InvalidContainer", "InvalidHashKey", "LockedError",
    "ModificationNotAllowed", "NotExistent", "NotInitialised", "ObjectMeta", "ObjectReader",
    "ObjectStream", "ObjectType", "StagedObject", "ValidationIssues", "ValidationReport",
})


def __getattr__(name: str) -> object:
    """RemoteContainer and __version__ on first use only: `import dosfs` loads neither the S3
    client nor importlib.metadata (50 ms of every process start, the mount's daemon's too)."""
    if name in _FROM_CONTAINER:
        import dosfs.container

        return getattr(dosfs.container, name)
    if name == "RemoteContainer":
        from dosfs.remote.container import RemoteContainer

        return RemoteContainer
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("dosfs")
        except PackageNotFoundError:  # running from a source tree that is not installed
            return "0.0.0+unknown"
    raise AttributeError(f"module 'dosfs' has no attribute {name!r}")

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
