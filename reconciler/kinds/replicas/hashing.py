"""Content checksums (sha256) of files where they lie: locally with hashlib, on an ssh host
with one streamed ``xargs -0 sha256sum -z`` per call (the names go NUL-separated on its
stdin), never one ssh call per file.

Both return, per name, the hex digest or None when the file could not be read (missing,
unreadable): the caller decides what a missing copy means. The host needs GNU coreutils'
``sha256sum`` (for ``-z``) and xargs.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from reconciler.errors import ReconcilerError
from reconciler.providers.location import Location, SshSettings
from reconciler.providers.process import KilledBySignal, Streamed, require

MISSING_SHA256SUM = 97  # the remote script's exit when sha256sum is not on the host's PATH
BLOCK = 1 << 20
HASH_SLICE = 64  # files per task of the hashing threads


def _hash_one(path: bytes) -> str | None:
    try:
        with open(path, "rb", buffering=0) as stream:
            digest = hashlib.sha256()
            while block := stream.read(BLOCK):  # a small file: one read, and one that finds the end
                digest.update(block)  # releases the GIL for large blocks
            return digest.hexdigest()
    except OSError:
        return None


def _hash_many(paths: list[bytes]) -> list[str | None]:
    return [_hash_one(path) for path in paths]


def hash_local(root: str, names: list[bytes], jobs: int = 2) -> dict[bytes, str | None]:
    """sha256 of each ``root/name`` (names relative, as bytes), ``jobs`` threads at a time.
    The threads take the files ``HASH_SLICE`` at a time: one task per small file costs more
    than hashing it."""
    top = os.fsencode(root)
    full = [os.path.join(top, name) for name in names]
    if jobs <= 1 or len(names) < 2:
        return {name: _hash_one(path) for name, path in zip(names, full, strict=True)}
    slices = [full[start:start + HASH_SLICE] for start in range(0, len(full), HASH_SLICE)]
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sha256") as pool:
        digests = [digest for part in pool.map(_hash_many, slices) for digest in part]
    return dict(zip(names, digests, strict=True))


def remote_script(root: str) -> str:
    return (f"command -v sha256sum >/dev/null 2>&1 || exit {MISSING_SHA256SUM}; "
            f"cd {shlex.quote(root)} || exit 3; exec xargs -0 -r sha256sum -z --")


def _records(location: Location, settings: SshSettings, root: str, names: list[bytes],
             error: type[ReconcilerError]) -> Iterator[bytes]:
    run = Streamed(require("ssh", "openssh-client"), [*location.ssh_args(settings)[1:], remote_script(root)],
                   b"".join(name + b"\0" for name in names))
    try:
        yield from run.records()
    except KilledBySignal as killed:
        raise error(f"hashing on {location.destination} failed: ssh was {killed}") from None
    code = run.exit_code
    said = [line for line in run.stderr if line.strip()]
    if code == MISSING_SHA256SUM:
        raise error(f"sha256sum is not installed on {location.destination} (checksum = \"sha256\" needs it "
                    "there): install coreutils on that host")
    if code == 255:
        raise error(f"cannot reach {location.destination} over ssh: {said[-1] if said else 'exit 255'}")
    if code == 3:
        raise error(f"{location.destination}:{root} does not exist (unmounted?)")
    if code not in (0, 123):  # 123: some file could not be read; it is absent from the output
        raise error(f"hashing on {location.destination} failed: {said[-1] if said else f'exit {code}'}")


def hash_remote(location: Location, settings: SshSettings, root: str, names: list[bytes],
                error: type[ReconcilerError]) -> dict[bytes, str | None]:
    """sha256 of each ``root/name`` on the location's host, in one ssh call. Raises ``error``
    (ObserveError or ApplyError) when the host cannot be reached or lacks sha256sum."""
    found: dict[bytes, str | None] = dict.fromkeys(names)
    if not names:
        return found
    for record in _records(location, settings, root, names, error):
        if len(record) < 66:
            continue
        digest, name = record[:64].decode("ascii", "replace"), record[66:]
        if name in found:
            found[name] = digest
    return found


def hash_files(location: Location, settings: SshSettings, subdir: str, names: list[bytes],
               error: type[ReconcilerError], jobs: int = 2) -> dict[bytes, str | None]:
    """sha256 of ``<location>/<subdir>/<name>`` for each name, wherever the location is."""
    root = location.path.rstrip("/") + ("/" + subdir if subdir else "")
    if location.is_remote:
        return hash_remote(location, settings, root, names, error)
    return hash_local(root, names, jobs)
