"""Small file-system helpers shared by the engine and the kinds."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one,
    never half of it: a temporary file in the same directory, fsync, rename.

    Raises OSError (the caller names the file) when the directory is not writable.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        else:
            os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class HashingWriter:
    """A file opened for writing that hashes (sha256) and counts the bytes as they are
    written, and fsyncs on close: a manifest never needs to read its files back."""

    BUFFER = 1 << 20

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close(), which callers call in a finally
        self._digest = hashlib.sha256()
        self._pending = bytearray()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self._pending += data
        if len(self._pending) >= self.BUFFER:
            self._drain()
        return len(data)

    def _drain(self) -> None:
        if self._pending:
            self._digest.update(self._pending)
            self.bytes += len(self._pending)
            self._file.write(self._pending)
            self._pending = bytearray()

    def flush(self) -> None:
        self._drain()
        self._file.flush()

    def close(self) -> tuple[int, str]:
        """Flush, fsync, close; return (bytes written, sha256 hex)."""
        if not self._file.closed:
            self._drain()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        return self.bytes, self._digest.hexdigest()


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
