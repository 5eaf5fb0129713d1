"""The mount's bounds, importable without pyfuse3 (mount.py parses options with them)."""

from __future__ import annotations

#: Default bound on names kept in incoming/ (about 0.6 KB each; see docs/semantics.md).
DEFAULT_MAX_NAMES = 10_000
#: Default bound on by-hash inodes the daemon keeps for the kernel (about 0.35 KB each).
#: Past it, the oldest entries are invalidated in the kernel (which then forgets them) and a
#: listing hands out untracked inode numbers: memory stays flat however many objects exist.
DEFAULT_MAX_INODES = 16_384
#: Longest name in a folder (what statfs reports as f_namemax).
NAME_MAX = 255
#: Longest symlink target the kernel accepts (PATH_MAX, with its terminating NUL).
PATH_MAX = 4096
