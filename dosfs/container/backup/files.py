"""Copying one file like rsync -a (bytes kernel-side, mode, owner, mtime), comparing files for
hard links, and making a whole backup durable with one syncfs."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable

_TAIL = 64 * 1024
_COPY_CHUNK = 64 * 1024 * 1024


def _copy_fd_range(src: int, dst: int, size: int, progress: Callable[[int], None] | None) -> int:
    """Copy bytes [0, size) of src to dst (kernel-side when possible); stops early at EOF."""
    done = 0
    use_cfr = True
    while done < size:
        n = min(_COPY_CHUNK, size - done)
        if use_cfr:
            try:
                got = os.copy_file_range(src, dst, n, done, done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                use_cfr = False
                continue
        else:
            data = os.pread(src, min(n, 8 * 1024 * 1024), done)
            got = len(data)
            view = memoryview(data)
            pos = 0
            while pos < got:
                pos += os.pwrite(dst, view[pos:], done + pos)
        if got == 0:
            break
        done += got
        if progress is not None:
            progress(got)
    return done


_IS_ROOT = os.geteuid() == 0


def _umask() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _create_like(path: str, st: os.stat_result) -> int:
    """A new file for a copy of `st` (its mode already right unless the umask or special bits
    get in the way; _set_meta fixes those)."""
    return os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, stat.S_IMODE(st.st_mode) & 0o777
    )


def _set_meta(fd: int, st: os.stat_result, owner_ok: bool = False) -> None:
    """What rsync -a keeps: mode, owner (when root), mtime; so its --link-dest links to us.
    Only the syscalls that change something (a copy of 10^5 small files feels each one)."""
    mode = stat.S_IMODE(st.st_mode)
    umask = _UMASK
    if umask is None or mode & ~0o777 or mode & umask:
        os.fchmod(fd, mode)
    if _IS_ROOT and not (owner_ok and st.st_uid == _EUID and st.st_gid == _EGID):
        os.fchown(fd, st.st_uid, st.st_gid)
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


_UMASK = _umask()
_EUID = os.geteuid()
_EGID = os.getegid()


def _same_tail(a: int, b_path: str, size: int) -> bool:
    n = min(size, _TAIL)
    try:
        fd = os.open(b_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return os.pread(a, n, size - n) == os.pread(fd, n, size - n)
    finally:
        os.close(fd)


def _same_bytes(a_path: str, b_path: str) -> bool:
    try:
        with open(a_path, "rb") as fa, open(b_path, "rb") as fb:
            return bool(fa.read() == fb.read())
    except OSError:
        return False


def _mkdir_owned(path: str, st: os.stat_result) -> None:
    """A folder we can write into; its mode and times are set at the end (like rsync), so a
    read-only source folder does not stop us from filling the copy."""
    os.mkdir(path, 0o700)
    if _IS_ROOT:
        os.chown(path, st.st_uid, st.st_gid)


def _syncfs(path: str) -> None:
    """Make everything written below `path` durable: one syncfs(2) for the whole file system
    instead of an fsync per file."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def _same_files(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(1024 * 1024)
            if x != fb.read(1024 * 1024):
                return False
            if not x:
                return True
