"""Portable project bundles: a project's documents and directory as one tar file a user
can keep, inspect and carry to another instance.

Layout (members in this order):

- ``bundle.json``: format version, source instance, project uid, the project, workspace
  and job documents as canonical Extended JSON, the users they reference, links that
  pointed outside the project (not carried), creation time, tool version;
- ``data/…``: the project directory (without ``cs.lock``, which belongs to an instance),
  omitted with ``--metadata-only``;
- ``MANIFEST.sha256``: ``<sha256>  <member>`` for every member before it (files: their
  bytes; directories: sha256 of ``directory``; symlinks: sha256 of ``symlink:<target>``);
- ``MANIFEST.sha256.hmac`` (optional): HMAC-SHA256 of the manifest with a shared key.

Written as a stream (memory does not grow with the project) under a temporary name,
renamed when complete; ``.tar.gz`` and ``.tar.zst`` compress the whole stream.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, cast

from bson import json_util
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler import __version__
from reconciler.errors import ReconcilerError
from reconciler.kinds.projects.bundle_safety import ExtractionRefused, MemberPolicy, SafeExtractor
from reconciler.providers.cryosparc.model import LOCK_FILE, Records, is_temporary
from reconciler.providers.rsync import PARTIAL_DIR

FORMAT_VERSION: Literal[1] = 1
HEADER, MANIFEST, SIGNATURE, DATA = "bundle.json", "MANIFEST.sha256", "MANIFEST.sha256.hmac", "data/"
_CANONICAL = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True, tzinfo=UTC)
_BLOCK = 1 << 20
_COPY_BLOCK = 4 << 20  # one read, hash and compressor write per 4 MiB of a file


class BundleError(ReconcilerError, ValueError):
    """A bundle is damaged, incomplete, tampered with, unsafe or not a bundle; the message says which."""


class BundleHeader(BaseModel):
    """The schema of ``bundle.json``."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1]
    tool_version: str
    created_at: datetime
    source_instance: dict[str, str] = Field(description="name and instance_id")
    project_uid: str
    includes_data: bool
    project: str  # canonical Extended JSON of the project document
    workspaces: str
    jobs: str
    users: str
    external_links: list[dict[str, str]] = Field(default_factory=list)

    def records(self) -> Records:
        return Records(project=_load(self.project), workspaces=_load(self.workspaces), jobs=_load(self.jobs))

    def user_documents(self) -> list[dict[str, Any]]:
        return list(_load(self.users))


def _dump(value: Any) -> str:
    return json_util.dumps(value, json_options=_CANONICAL, sort_keys=True)


def _load(text: str) -> Any:
    return json_util.loads(text, json_options=_CANONICAL)


def _directory_digest() -> str:
    return hashlib.sha256(b"directory").hexdigest()


def _link_digest(target: str) -> str:
    return hashlib.sha256(b"symlink:" + target.encode("utf-8", "surrogateescape")).hexdigest()


# -- compression ------------------------------------------------------------------------------


def compression_of(path: Path) -> str:
    name = path.name
    if name.endswith((".zst", ".zstd")):
        return "zst"
    if name.endswith((".gz", ".tgz")):
        return "gz"
    return "none"


@contextmanager
def _writer(path: Path, kind: str) -> Iterator[IO[bytes]]:
    with open(path, "wb") as raw:
        if kind == "zst":
            import zstandard

            with zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(raw, closefd=False) as stream:
                yield stream
        elif kind == "gz":
            import gzip

            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as stream:
                yield cast(IO[bytes], stream)
        else:
            yield raw
        raw.flush()
        os.fsync(raw.fileno())


@contextmanager
def _reader(path: Path) -> Iterator[IO[bytes]]:
    with open(path, "rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic == b"\x28\xb5\x2f\xfd":
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(raw) as stream:
                yield stream  # type: ignore[misc]
        elif magic[:2] == b"\x1f\x8b":
            import gzip

            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield cast(IO[bytes], stream)
        else:
            yield raw


# -- export -----------------------------------------------------------------------------------


class _Sink:
    """The tar stream's writer: gathers headers and small members into one buffer, so the
    compressor gets few large writes rather than one per member, and counts the offset for
    the final padding (the same bytes ``tarfile`` writes)."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.pending = bytearray()
        self.offset = 0

    def write(self, data: bytes | memoryview) -> None:
        self.offset += len(data)
        if len(data) >= _BLOCK:
            self.flush()
            self.stream.write(data)
            return
        self.pending += data
        if len(self.pending) >= _BLOCK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.stream.write(self.pending)
            self.pending = bytearray()

    def member(self, info: tarfile.TarInfo) -> None:
        self.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def pad(self, size: int) -> None:
        remainder = size % tarfile.BLOCKSIZE
        if remainder:
            self.write(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))

    def close(self) -> None:
        """The end of archive: two zero blocks, then zeros to a whole record (as ``tarfile``)."""
        self.write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        remainder = self.offset % tarfile.RECORDSIZE
        if remainder:
            self.write(tarfile.NUL * (tarfile.RECORDSIZE - remainder))
        self.flush()


def _add_bytes(sink: _Sink, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(datetime.now(UTC).timestamp())
    info.mode = 0o644
    sink.member(info)
    sink.write(data)
    sink.pad(len(data))


def _add_file(sink: _Sink, info: tarfile.TarInfo, path: str, buffers: tuple[memoryview, memoryview],
              hasher: ThreadPoolExecutor) -> str:
    """Write a regular file's header and exactly ``info.size`` bytes of it, hashing them in
    the same pass; returns the sha256. Raises BundleError when the file shrank while it was read.

    Each byte is read once, in large blocks. A large file's blocks are hashed by ``hasher``
    while the compressor takes the same block and the next block is read into the other
    buffer: sha256, compression and reading each release the GIL, so they overlap."""
    sink.member(info)
    digest = hashlib.sha256()
    remaining = info.size
    hashing: Future[None] | None = None
    with open(path, "rb", buffering=0) as source:
        turn = 0
        while remaining:
            buffer = buffers[turn]
            turn ^= 1
            count = source.readinto(buffer[:min(remaining, len(buffer))])
            if not count:
                raise BundleError(f"{path} shrank while it was bundled (it is being written?); "
                                  "nothing was left behind")
            block = buffer[:count]
            if hashing is not None:
                hashing.result()  # the previous block (in the other buffer) is hashed
                hashing = None
            if count >= _BLOCK:
                hashing = hasher.submit(digest.update, block)
            else:
                digest.update(block)
            sink.write(block)
            remaining -= count
    if hashing is not None:
        hashing.result()
    sink.pad(info.size)
    return digest.hexdigest()


def _walk(root: str, top: bool = True) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below ``root`` with its lstat, in a stable order (directories before their
    contents), without the instance's lock and rsync's partial directories."""
    with os.scandir(root) as found:
        entries = sorted(found, key=lambda entry: entry.name)
    for entry in entries:
        if entry.name == PARTIAL_DIR or (top and entry.name == LOCK_FILE) or is_temporary(entry.name):
            continue
        status = entry.stat(follow_symlinks=False)
        yield entry.path, status
        if stat.S_ISDIR(status.st_mode):
            yield from _walk(entry.path, top=False)


def _tarinfo(name: str, status: os.stat_result) -> tarfile.TarInfo:
    """The header ``tarfile.gettarinfo`` would make, without owner names (uid/gid 0): a hard
    link is bundled as a regular file of its own, as import accepts no hard links."""
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(status.st_mode)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = status.st_mtime
    if stat.S_ISREG(status.st_mode):
        info.type, info.size = tarfile.REGTYPE, status.st_size
    elif stat.S_ISDIR(status.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(status.st_mode):
        info.type = tarfile.SYMTYPE
    else:
        raise BundleError(f"{name} is neither a file, a directory nor a link; cannot bundle it")
    return info


def export_bundle(output: Path, records: Records, users: list[dict[str, Any]], source: dict[str, str],
                  directory: Path | None, key: bytes | None = None,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the bundle to ``output`` (temporary name, renamed when complete).

    ``directory`` None: metadata only. Returns a summary (members, bytes, external links).

    The tar stream is written here (``tarfile``'s headers, the same bytes ``tarfile`` writes),
    each file read once in large blocks that are hashed and handed to the compressor together;
    ``tarfile``'s own writer copies in 16 KiB pieces and keeps every member in a list.
    """
    output = Path(output)
    temporary = output.with_name(f".{output.name}.partial")
    external: list[dict[str, str]] = []
    plan: list[tuple[str, str, os.stat_result]] = []  # path, member name, lstat
    if directory is not None:
        root = str(directory)
        for path, status in _walk(root):
            relative = os.path.relpath(path, root)
            if stat.S_ISLNK(status.st_mode):
                target = os.readlink(path)
                resolved = Path(os.path.normpath(os.path.join(os.path.dirname(path), target)))
                if not resolved.is_relative_to(directory):
                    external.append({"path": relative, "target": target})
                    continue
            plan.append((path, DATA + Path(relative).as_posix(), status))
    header = BundleHeader(
        format_version=FORMAT_VERSION, tool_version=__version__,
        created_at=datetime.now(UTC).replace(microsecond=0), source_instance=source,
        project_uid=str(records.project["uid"]), includes_data=directory is not None,
        project=_dump({k: v for k, v in records.project.items() if k != "_id"}),
        workspaces=_dump([{k: v for k, v in item.items() if k != "_id"} for item in records.workspaces]),
        jobs=_dump([{k: v for k, v in item.items() if k != "_id"} for item in records.jobs]),
        users=_dump(users), external_links=external)
    manifest: list[tuple[str, str]] = []
    total_bytes = 0
    buffers = (memoryview(bytearray(_COPY_BLOCK)), memoryview(bytearray(_COPY_BLOCK)))
    try:
        with _writer(temporary, compression_of(output)) as stream, ThreadPoolExecutor(1) as hasher:
            sink = _Sink(stream)
            data = header.model_dump_json(indent=1).encode()
            _add_bytes(sink, HEADER, data)
            manifest.append((hashlib.sha256(data).hexdigest(), HEADER))
            for index, (path, name, status) in enumerate(plan):
                info = _tarinfo(path, status)
                info.name = name
                if info.issym():
                    target = os.readlink(path)
                    if os.path.isabs(target):  # inside the project: make it relative to the link
                        target = os.path.relpath(target, os.path.dirname(path))
                    info.linkname = target
                    sink.member(info)
                    manifest.append((_link_digest(info.linkname), name))
                elif info.isdir():
                    sink.member(info)
                    manifest.append((_directory_digest(), name))
                else:
                    manifest.append((_add_file(sink, info, path, buffers, hasher), name))
                    total_bytes += info.size
                if progress:
                    progress(index + 1, len(plan))
            text = "".join(f"{digest}  {name}\n" for digest, name in manifest).encode()
            _add_bytes(sink, MANIFEST, text)
            if key is not None:
                _add_bytes(sink, SIGNATURE, hmac.new(key, text, hashlib.sha256).hexdigest().encode() + b"\n")
            sink.close()
        os.replace(temporary, output)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise BundleError(f"cannot make the bundle {output}: {error.strerror}: {error.filename} "
                          "(nothing was left behind)") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return {"members": len(manifest), "bytes": total_bytes, "external_links": external}


# -- verification -----------------------------------------------------------------------------


def read_header(path: Path) -> BundleHeader:
    """Only ``bundle.json`` (the first member): cheap, for plans. Raises BundleError."""
    try:
        with _reader(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            member = tar.next()
            if member is None or member.name != HEADER or not member.isreg():
                raise BundleError(f"{path}: not a reconciler bundle (its first member is not {HEADER})")
            handle = tar.extractfile(member)
            assert handle is not None
            return _parse_header(handle.read(), path)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise BundleError(f"{path}: cannot read the bundle ({error})") from None


def _parse_header(data: bytes, path: Path) -> BundleHeader:
    try:
        return BundleHeader.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BundleError(f"{path}: bundle.json does not follow the bundle schema ({where}: {first['msg']})") from None


@dataclass
class Verification:
    """What reading a whole bundle found: its header, every problem (none: intact and safe to
    import), and how many bytes its files hold once extracted."""

    header: BundleHeader | None
    problems: list[str]
    expanded_bytes: int = 0


def verify_bundle(path: Path, key: bytes | None = None) -> Verification:
    """Read the whole bundle: every checksum, the manifest's completeness, bundle.json's schema,
    every member against the extraction policy (``bundle_safety``: the same rules import applies),
    the signature."""
    problems: list[str] = []
    policy = MemberPolicy()
    digests: dict[str, str] = {}
    seen: set[str] = set()
    first: str | None = None
    header: BundleHeader | None = None
    manifest_text: bytes | None = None
    signature: bytes | None = None
    try:
        with _reader(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                first = member.name if first is None else first
                if member.name in seen:
                    problems.append(f"{member.name}: appears twice")
                seen.add(member.name)
                if not policy.admit(member):
                    continue
                if member.isreg():
                    handle = tar.extractfile(member)
                    assert handle is not None
                    digest = hashlib.sha256()
                    kept = bytearray() if member.name in (HEADER, MANIFEST, SIGNATURE) else None
                    for block in iter(functools.partial(handle.read, _BLOCK), b""):
                        digest.update(block)
                        if kept is not None:
                            kept.extend(block)
                    if member.name == MANIFEST:
                        manifest_text = bytes(kept or b"")
                        continue
                    if member.name == SIGNATURE:
                        signature = bytes(kept or b"")
                        continue
                    if member.name == HEADER:
                        try:
                            header = _parse_header(bytes(kept or b""), path)
                        except BundleError as error:
                            problems.append(str(error))
                    digests[member.name] = digest.hexdigest()
                elif member.isdir():
                    digests[member.name] = _directory_digest()
                else:
                    digests[member.name] = _link_digest(member.linkname)
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        problems.append(f"the archive is truncated or damaged ({type(error).__name__}: {error})")
        return Verification(header, policy.problems + problems)
    problems = policy.finish() + problems
    if first != HEADER:
        problems.append(f"the first member is not {HEADER}: not a reconciler bundle")
    if manifest_text is None:
        problems.append(f"{MANIFEST} is missing")
        return Verification(header, problems)
    listed: dict[str, str] = {}
    for number, line in enumerate(manifest_text.decode("utf-8", "replace").splitlines(), 1):
        written, sep, name = line.partition("  ")
        if not sep or len(written) != 64:
            problems.append(f"{MANIFEST} line {number} is malformed")
            continue
        listed[name] = written
    for name, written in listed.items():
        if name not in digests:
            problems.append(f"{name}: listed in the manifest but missing from the bundle")
        elif digests[name] != written:
            problems.append(f"{name}: checksum mismatch (the member was changed)")
    for name in digests:
        if name not in listed:
            problems.append(f"{name}: in the bundle but not in the manifest")
    if key is not None:
        if signature is None:
            problems.append("the bundle is not signed (no MANIFEST.sha256.hmac) but a key was given")
        elif not hmac.compare_digest(signature.strip().decode("ascii", "replace"),
                                     hmac.new(key, manifest_text, hashlib.sha256).hexdigest()):
            problems.append("the signature does not match: the manifest was changed or the key is wrong")
    return Verification(header, problems, policy.expanded_bytes)


def extract_data(path: Path, destination: Path, byte_budget: int | None = None) -> int:
    """Extract the ``data/`` members into ``destination`` (which must exist and be empty) with
    ``bundle_safety``'s extractor: the policy of ``verify_bundle`` applied again, no write through
    a symlink, at most ``byte_budget`` bytes. Returns the count of members written.

    Raises BundleError for a refused or damaged bundle, OSError as the system gives it.
    """
    try:
        with _reader(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar, \
                SafeExtractor(destination, byte_budget) as extractor:
            for member in tar:
                extractor.add(member, tar.extractfile(member) if member.isreg() else None)
            return extractor.finish()
    except ExtractionRefused as error:
        raise BundleError(f"{path}: {error}") from None
    except (tarfile.TarError, EOFError) as error:
        raise BundleError(f"{path}: extraction failed ({error})") from None


def load_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    data = Path(path).read_bytes().strip()
    if len(data) < 16:
        raise BundleError(f"{path}: a signing key must be at least 16 bytes")
    return data


def describe(header: BundleHeader) -> str:
    records = header.records()
    return (f"{header.project_uid} '{records.project.get('title', '')}' from {header.source_instance.get('name')} "
            f"({len(records.jobs)} jobs, {len(records.workspaces)} workspaces, "
            f"{'with data' if header.includes_data else 'metadata only'}, made {header.created_at:%Y-%m-%d %H:%M}Z)")


def header_json(header: BundleHeader) -> str:
    return header.model_dump_json(indent=2)
