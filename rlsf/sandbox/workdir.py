"""Work directories: :class:`Workdir` (files in and out, never through a program's symlinks) and
:func:`_rmtree`, the removal of a tree a hostile program wrote into."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Workdir:
    """A work directory that outlives one run (compile, then run the binary in it).

    ``path`` is the host path; programs see it as their current directory (``/sandbox`` under
    bwrap). ``uid`` owns it when the caller is root (every run in it runs as that uid)."""

    path: Path
    uid: int | None = None

    def write(self, name: str, data: bytes | str, *, executable: bool = False) -> Path:
        target = self._inside(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._inside(name)  # a directory on the way may be a symlink a program left
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise ValueError(f"{name!r} exists and is not a regular file")
        data = data.encode() if isinstance(data, str) else bytes(data)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755 if executable else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(target, 0o755 if executable else 0o644)
        if self.uid is not None:
            parent = target.parent
            while parent != self.path and parent.is_relative_to(self.path):
                os.chown(parent, self.uid, self.uid)
                parent = parent.parent
            os.chown(target, self.uid, self.uid)
        return target

    def read(self, name: str, max_bytes: int | None = None) -> bytes:
        """A regular file the runs left (a symlink or FIFO a program put there raises ValueError)."""
        target = self._inside(name)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ValueError(f"{name!r} is a symlink") from e
            raise
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ValueError(f"{name!r} is not a regular file")
            return f.read(max_bytes if max_bytes is not None else -1)


    def _inside(self, name: str) -> Path:
        target = self.path / _relative(name)
        parent = Path(os.path.realpath(target.parent))
        if os.path.lexists(target.parent) and not parent.is_relative_to(os.path.realpath(self.path)):
            raise ValueError(f"{name!r} leads out of the work directory (through a symlink)")
        return target


def _relative(name: str) -> Path:
    p = Path(name)
    if p.is_absolute() or not p.parts or ".." in p.parts:
        raise ValueError(f"file names must be relative paths inside the work directory, got {name!r}")
    return p


def _rmtree(path: Path) -> None:
    """Remove a tree that a hostile program wrote into: make its directories searchable and
    writable on the way (it may have chmod-ed them 000), never follow its symlinks, and never
    touch anything outside the tree."""
    root = os.path.abspath(path)

    def inside(p: str) -> bool:
        return p == root or p.startswith(root + os.sep)

    def fix(_func, p, _exc) -> None:
        p = os.path.abspath(p)
        for d in (os.path.dirname(p), p):
            if inside(d) and os.path.isdir(d) and not os.path.islink(d):
                with contextlib.suppress(OSError):
                    os.chmod(d, 0o700)
        if p == root:
            return  # retried by the loop below
        with contextlib.suppress(OSError):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.unlink(p)

    if not os.path.isdir(root) or os.path.islink(root):
        return
    for _ in range(3):
        if sys.version_info >= (3, 12):
            shutil.rmtree(root, onexc=fix)
        else:
            shutil.rmtree(root, onerror=fix)
        if not os.path.lexists(root):
            break
