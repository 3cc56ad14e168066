"""Download a file from a list of mirrors, checking its digest (MD5 for the datasets, sha512 for npm packages).

The file is streamed into a temporary file beside ``dest`` and renamed into place only once its
digest matches, so an interrupted or corrupted download never leaves a file that looks complete.
``urllib`` also reads ``file://`` URLs, which the tests use in place of the network.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from pathlib import Path

from rnnzoo.pipeline import files
from rnnzoo.pipeline.tasks.base import TaskError

TIMEOUT_S = 10.0  # per connection attempt: an offline machine fails fast, a slow mirror is skipped
CHUNK = 1 << 20


def md5_of(path: Path) -> str:
    """The hex MD5 digest of a file, read in chunks."""
    return files.file_digest(path, "md5")


def verify_digest(path: Path, digest: str, algorithm: str = "md5", name: str | None = None) -> None:
    """Raise ``TaskError`` unless ``path`` has the hex ``digest`` under ``algorithm`` (a hashlib
    name); ``name`` is what the message calls the file."""
    actual = files.file_digest(path, algorithm)
    if actual != digest.lower():
        raise TaskError(f"{name or path}: {algorithm} is {actual}, expected {digest.lower()}")


def verify_md5(path: Path, md5: str, name: str | None = None) -> None:
    """Raise ``TaskError`` unless ``path`` has digest ``md5``; ``name`` is what the message calls it."""
    verify_digest(path, md5, "md5", name)


def download(urls: Sequence[str], dest: Path, digest: str | None, timeout: float = TIMEOUT_S, algorithm: str = "md5") -> Path:
    """Fetch ``dest`` from the first of ``urls`` that works and whose content has the hex ``digest``
    under ``algorithm`` (MD5 by default).

    ``digest=None`` skips the check (for files whose canonical digest is not known). Raises
    ``TaskError`` listing every URL tried and why it failed; nothing is left at ``dest`` then.
    """
    failures = []
    for url in urls:
        try:
            _fetch(url, dest, digest, algorithm, timeout)
            return dest
        except (OSError, TaskError) as error:  # URLError and timeouts are OSErrors
            failures.append(f"{url}: {error}")
    tried = "\n  ".join(failures) or "(no URL given)"
    raise TaskError(f"could not download {dest.name} into {dest.parent}:\n  {tried}")


def _fetch(url: str, dest: Path, digest: str | None, algorithm: str, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:

        def write(temp: Path) -> None:
            with temp.open("wb") as file:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    file.write(chunk)
            if digest is not None:
                try:
                    verify_digest(temp, digest, algorithm, name=str(dest))
                except TaskError as error:
                    raise TaskError(f"{error}; the download was corrupt and has been removed") from None

        files.atomic_write(dest, write)  # renamed into place only once complete and verified
