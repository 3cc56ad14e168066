"""A stage's outputs appear together or not at all.

A stage writes each output to a temporary path beside its final place (``staged.file(path)``,
``staged.folder(path)``); only when the block ends without an error are they all renamed into
place, one rename each. If writing fails (disk full, a read-only folder), nothing is renamed and
the temporaries are removed: the previous outputs stay as they were. If a rename fails part-way,
the outputs already renamed are put back, so a reader never sees a new ``model.pt`` beside an old
``train_history.json``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rnnzoo.pipeline.files import _umask

# What a failed write of an output looks like: no space, no quota, a read-only or forbidden folder.
# A folder in the way of a file, or a file in the way of a folder, too.
_WRITE_FAILURES = {
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
}


class StageOutputError(OSError):
    """A stage's outputs could not be written; the previous ones are unchanged."""


class Staged:
    """Temporary paths for one stage's outputs, renamed into place together by :func:`together`."""

    def __init__(self) -> None:
        self._moves: list[tuple[Path, Path]] = []  # (temporary, final)

    def file(self, path: Path) -> Path:
        """A temporary file name beside ``path`` to write ``path``'s content to."""
        return self._stage(path, folder=False)

    def folder(self, path: Path) -> Path:
        """An empty temporary folder beside ``path`` to fill with ``path``'s content."""
        return self._stage(path, folder=True)

    def _stage(self, path: Path, folder: bool) -> Path:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # e.g. a file where a folder must go
            raise StageOutputError(f"could not write {path}: {error.strerror or error}; the previous outputs are unchanged") from None
        # From a run that was killed: staged outputs, and the temporaries of files.atomic_write within them.
        for pattern in (f".{path.name}.*.staged", f"..{path.name}.*.staged.*.tmp"):
            for leftover in path.parent.glob(pattern):
                _remove(leftover)
        prefix, suffix = f".{path.name}.", ".staged"
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
        else:
            handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
            os.close(handle)
            tmp = Path(name)
        self._moves.append((tmp, path))
        return tmp

    def _commit(self) -> None:
        backups: list[tuple[Path, Path | None]] = []  # (final, its previous content moved aside, or None)
        try:
            for tmp, final in self._moves:
                os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~_umask())  # mkstemp/mkdtemp make 0600/0700
                previous = None
                if final.exists():
                    previous = final.with_name(f".{final.name}.previous.staged")
                    _remove(previous)
                    os.replace(final, previous)
                backups.append((final, previous))
                os.replace(tmp, final)
        except BaseException as error:  # Ctrl-C or SIGTERM between two renames too: never a mix of old and new
            failed = final
            for done, previous in reversed(backups):  # the failed one's final may be absent: no matter
                _remove(done)
                if previous is not None:
                    os.replace(previous, done)
            if not isinstance(error, OSError):
                raise
            raise StageOutputError(f"could not write {failed}: {error.strerror or error}; the previous outputs are unchanged") from None
        for _, previous in backups:
            if previous is not None:
                _remove(previous)

    def finals_of(self, filename: str | None) -> str:
        """The final path(s) a failed write was for: the one whose temporary ``filename`` is, else all."""
        if filename is not None:
            name = Path(filename)
            for tmp, final in self._moves:
                # The staged file, a temporary beside it (files.atomic_write), or a file in a staged folder.
                if name == tmp or name.name.startswith(f".{tmp.name}.") or tmp in name.parents:
                    return str(final)
        return ", ".join(str(final) for _, final in self._moves) or "the stage's outputs"

    def _discard(self) -> None:
        for tmp, _ in self._moves:
            _remove(tmp)


@contextlib.contextmanager
def together() -> Iterator[Staged]:
    """Yield a :class:`Staged`; when the block succeeds, every staged output is renamed into place.

    Raises :class:`StageOutputError` (naming the path and the reason) when an output cannot be
    written or moved into place; the block's own errors propagate unchanged. Either way nothing
    half-written is left behind.
    """
    staged = Staged()
    try:
        try:
            yield staged
        except OSError as error:
            if error.errno not in _WRITE_FAILURES:  # e.g. a missing input: not an output that failed
                raise
            where = staged.finals_of(error.filename)
            raise StageOutputError(f"could not write {where}: {error.strerror or error}; the previous outputs are unchanged") from None
        staged._commit()
    finally:
        staged._discard()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

