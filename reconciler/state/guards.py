"""Locks that die with their process: what makes a state database's lock trustworthy.

A guard is held by one process and released by the operating system (SQLite: an
``flock`` on a file beside the database) or by the database server (PostgreSQL: a
session-level advisory lock on a connection kept open) when that process dies, even by
``kill -9``. ``lock.py`` builds the apply lock on these; ``store.py`` guards schema
creation with them. Nothing here touches the ``locks`` table.

A forked child (the replica walker's worker pool) inherits the guard's file descriptor or
socket; it closes its copy at once (``os.register_at_fork``), so a worker that outlives a
killed parent never keeps the parent's lock alive.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import StateError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from reconciler.state.store import StateStore

POLL_SECONDS = 0.05
# The server probes an idle lock session's client after 60 s, then every 10 s, 6 times.
KEEPALIVES = "SET tcp_keepalives_idle = 60; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 6"

_held: set[Guard] = set()  # guards this process holds (closed in forked children)
_held_lock = threading.Lock()
_local: set[tuple[int, str]] = set()  # (id of a :memory: store's engine, name) held in this process


class Guard:
    """One held guard; ``release`` lets it go (idempotent)."""

    def release(self) -> None:
        with _held_lock:
            _held.discard(self)
        self._let_go()

    def _let_go(self) -> None:
        raise NotImplementedError

    def _fileno(self) -> int | None:
        """The descriptor a forked child must close, if any."""
        return None


class FileGuard(Guard):
    """An exclusive ``flock`` on an open file (SQLite states)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd: int | None = fd

    def _let_go(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock; the file stays (unlinking races)

    def _fileno(self) -> int | None:
        return self.fd


class AdvisoryGuard(Guard):
    """A session-level ``pg_advisory_lock`` on a connection of its own (PostgreSQL states)."""

    def __init__(self, connection: Connection, key: int):
        self.connection: Connection | None = connection
        self.key = key
        self.fd: int | None = None
        try:
            self.fd = connection.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - only used to close a forked child's copy
            self.fd = None

    def _let_go(self) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            connection.invalidate()  # closes the session: the server drops its advisory locks
            connection.close()
        except Exception:  # noqa: BLE001,S110 - a broken connection holds no lock either
            pass

    def _fileno(self) -> int | None:
        return self.fd


class AdvisorySession(Guard):
    """A connection of its own holding any number of session-level advisory locks (PostgreSQL):
    the locks of one run (its shared hold on the state, its own liveness lock, one per address
    it changes). Released together when the session closes: by ``release``, or by the server
    when this process (or its host) dies."""

    def __init__(self, connection: Connection):
        self.connection: Connection | None = connection
        self.held: dict[int, bool] = {}  # key -> shared
        self.fd: int | None = None
        try:
            self.fd = connection.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - only used to close a forked child's copy
            self.fd = None

    def _execute(self, statement: str, key: int) -> object:
        from sqlalchemy import text

        assert self.connection is not None, "the lock session was released"
        return self.connection.execute(text(statement), {"key": key}).scalar()

    def try_lock(self, name: str, shared: bool = False) -> bool:
        """Take advisory lock ``name`` (shared or exclusive) now; False when another session
        holds it in a conflicting mode. Taking a lock this session holds is a no-op."""
        key = advisory_key(name)
        if key in self.held and (shared or not self.held[key]):
            return True
        function = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        if not self._execute(f"SELECT {function}(:key)", key):
            return False
        if key in self.held:  # was shared, now exclusive too: keep one of each, drop the shared
            self._execute("SELECT pg_advisory_unlock_shared(:key)", key)
        self.held[key] = shared
        return True

    def unlock(self, name: str) -> None:
        """Let advisory lock ``name`` go (a no-op when this session does not hold it)."""
        key = advisory_key(name)
        shared = self.held.pop(key, None)
        if shared is not None:
            self._execute("SELECT pg_advisory_unlock_shared(:key)" if shared else "SELECT pg_advisory_unlock(:key)",
                          key)

    def is_free(self, name: str) -> bool:
        """True when no other session holds advisory lock ``name`` at all (taken and let go)."""
        key = advisory_key(name)
        if key in self.held:
            return False
        if not self._execute("SELECT pg_try_advisory_lock(:key)", key):
            return False
        self._execute("SELECT pg_advisory_unlock(:key)", key)
        return True

    def _let_go(self) -> None:
        connection, self.connection = self.connection, None
        self.held = {}
        if connection is None:
            return
        try:
            connection.invalidate()  # closes the session: the server drops all its advisory locks
            connection.close()
        except Exception:  # noqa: BLE001,S110 - a broken connection holds no lock either
            pass

    def _fileno(self) -> int | None:
        return self.fd


class LocalGuard(Guard):
    """A lock within this process, for ``sqlite:///:memory:`` (no other process can open it)."""

    def __init__(self, key: tuple[int, str]):
        self.key: tuple[int, str] | None = key

    def _let_go(self) -> None:
        key, self.key = self.key, None
        if key is not None:
            with _held_lock:
                _local.discard(key)


def _after_fork_in_child() -> None:
    """Close the child's copies of every held guard's descriptor (never unlock: the parent holds it)."""
    global _held_lock
    _held_lock = threading.Lock()  # another thread may have held it at the fork
    for guard in list(_held):
        fd = guard._fileno()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if isinstance(guard, FileGuard):
            guard.fd = None
        elif isinstance(guard, (AdvisoryGuard, AdvisorySession)):
            guard.connection = None  # the parent's session: never touch it from here
    _held.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def lock_file(database_path: str, name: str) -> Path:
    """The file whose ``flock`` is lock ``name`` of the SQLite state at ``database_path``:
    ``<db>.lock`` for the apply lock, ``<db>.<name>.lock`` for a simple name, else a digest."""
    if name == "apply":
        return Path(f"{database_path}.lock")
    slug = name if re.fullmatch(r"[a-z0-9_-]{1,40}", name) else "lock-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return Path(f"{database_path}.{slug}.lock")


def advisory_key(name: str) -> int:
    """The 64-bit PostgreSQL advisory lock key of lock ``name`` (stable across hosts and versions)."""
    return int.from_bytes(hashlib.sha256(f"reconciler:{name}".encode()).digest()[:8], "big", signed=True)


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as error:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # an flock needs no write access
        except OSError:
            pass
        reason = error.strerror or str(error)
        raise StateError(
            f"cannot create the lock file {path} beside the state database ({reason}); make {path.parent} "
            "writable by this user, or point --state (or [state] url) at a database in a writable directory"
        ) from None


def _try_flock(path: Path) -> FileGuard | None:
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise StateError(
            f"cannot lock {path} ({error.strerror}); the file system of the state database does not support "
            "file locks: put the state database on a local disk"
        ) from None
    return FileGuard(path, fd)


def _own_connection(store: StateStore) -> Connection:
    """A connection of its own (autocommit) for advisory locks, which live as long as it does.
    Raises StateError naming the (redacted) state when the server cannot be reached."""
    from sqlalchemy.exc import OperationalError

    try:
        return store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except OperationalError as error:
        from reconciler.secrets import redact

        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise StateError(f"cannot open the state database {redact(store.url)}: {reason}") from None


def _try_advisory(store: StateStore, name: str) -> AdvisoryGuard | None:
    from sqlalchemy import text

    key = advisory_key(name)
    connection = _own_connection(store)
    try:
        taken = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
        if taken:  # a client host that vanishes (power cut, network gone) frees it within ~2 minutes
            connection.execute(text(KEEPALIVES))
    except BaseException:
        connection.invalidate()
        connection.close()
        raise
    if not taken:
        connection.close()
        return None
    return AdvisoryGuard(connection, key)


def open_session(store: StateStore) -> AdvisorySession:
    """A lock session on a PostgreSQL state: a connection of its own (autocommit), asking the
    server to notice a vanished client (TCP keepalives). Raises StateError when the server
    cannot be reached."""
    from sqlalchemy import text

    connection = _own_connection(store)
    try:
        connection.execute(text(KEEPALIVES))
    except BaseException:
        connection.invalidate()
        connection.close()
        raise
    session = AdvisorySession(connection)
    with _held_lock:
        _held.add(session)
    return session


def try_take(store: StateStore, name: str) -> Guard | None:
    """Take guard ``name`` of ``store`` now, or None when another holder has it.

    Raises StateError when it cannot even be tried (lock file not creatable, no file locks).
    """
    guard: Guard | None
    if not store.is_sqlite:
        guard = _try_advisory(store, name)
    elif store.database_path is not None:
        guard = _try_flock(lock_file(store.database_path, name))
    else:
        key = (id(store.engine), name)
        with _held_lock:
            if key in _local:
                return None
            _local.add(key)
        guard = LocalGuard(key)
    if guard is not None:
        with _held_lock:
            _held.add(guard)
    return guard


def take(store: StateStore, name: str, timeout: float, what: str) -> Guard:
    """Take guard ``name``, waiting up to ``timeout`` seconds (polling).

    Raises StateError saying ``what`` holds it when it stays taken.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        guard = try_take(store, name)
        if guard is not None:
            return guard
        if time.monotonic() >= deadline:
            raise StateError(f"{what} for more than {timeout:.0f} s; try again when it has finished")
        time.sleep(POLL_SECONDS)


def is_free(store: StateStore, name: str) -> bool:
    """True when nobody holds guard ``name`` (taken and let go at once to find out)."""
    guard = try_take(store, name)
    if guard is None:
        return False
    guard.release()
    return True
