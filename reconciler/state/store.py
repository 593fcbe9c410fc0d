"""Opening the state database: URL resolution, versioned schema, sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine, select

from reconciler.errors import ConfigError, StateError
from reconciler.state import guards
from reconciler.state.location import DEFAULT_STATE_PATH, chosen_state_url
from reconciler.state.tables import ENGINE_MIGRATIONS, ENGINE_SCHEMA_VERSION, ENGINE_TABLES, SchemaVersion

if TYPE_CHECKING:
    from reconciler.engine.kind import Kind


SCHEMA_WAIT_SECONDS = 120.0  # a migration of a big inventory takes a while


def resolve_state_url(cli_url: str | None, config_dir: Path, url: str | None = None, url_env: str | None = None) -> str:
    """The state database URL: ``--state``, else ``[state] url_env``, else ``[state] url``,
    else SQLite at ``state/reconciler.db`` next to the config.

    A relative ``sqlite:///`` path resolves against the config's directory.

    Raises ConfigError when ``url_env`` names an unset variable or the URL is not one.
    """
    chosen = chosen_state_url(cli_url, url, url_env)
    if not chosen:  # quoted: a URL reads ?, # and % in a directory's name as its own syntax
        return URL.create("sqlite", database=str(config_dir / DEFAULT_STATE_PATH)).render_as_string(hide_password=False)
    try:
        parsed = make_url(chosen)
    except ArgumentError:
        raise ConfigError(
            f"state URL {chosen!r} is not a database URL; write e.g. sqlite:///state/reconciler.db "
            "or postgresql+psycopg://user@host/db"
        ) from None
    if parsed.drivername.startswith("sqlite") and parsed.database and parsed.database != ":memory:":
        database = Path(parsed.database).expanduser()
        if not database.is_absolute():
            database = config_dir / database
        return parsed.set(database=str(database)).render_as_string(hide_password=False)
    return chosen


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class StateStore:
    """An open state database whose schema matches this version of the tool."""

    def __init__(self, url: str, kinds: "list[Kind] | None" = None):
        """Open (and create or migrate) the state database at ``url``.

        Raises StateError when it cannot be reached or was written by a newer
        reconciler (an unknown future schema version).
        """
        self.url = url
        self.kinds = list(kinds or [])
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StateError(f"state URL {url!r} is not a database URL") from None
        self.is_sqlite = parsed.drivername.startswith("sqlite")
        # The SQLite file, when the state is one (the no-change memo is kept only there).
        self.database_path: str | None = None
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            self.database_path = parsed.database
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.is_sqlite:
                self.engine: Engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
            self._prepare_schema()
        except ModuleNotFoundError as error:
            raise StateError(
                f"the driver for {redact_url(url)} is not installed ({error.name}); "
                "for PostgreSQL: pip install 'reconciler[postgres]'"
            ) from None
        except OperationalError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise StateError(f"cannot open the state database {redact_url(url)}: {reason}") from None

    def components(self) -> dict[str, tuple[int, dict[int, Any]]]:
        """Each component's current schema version and migrations."""
        found: dict[str, tuple[int, dict[int, Any]]] = {"engine": (ENGINE_SCHEMA_VERSION, dict(ENGINE_MIGRATIONS))}
        for kind in self.kinds:
            found[kind.name] = (kind.schema_version, dict(kind.migrations))
        return found

    def _prepare_schema(self) -> None:
        """Create or migrate the schema, one process at a time: under the ``schema`` guard
        (an flock on ``<db>.schema.lock``, or an advisory lock on PostgreSQL), so that two
        first runs on a new state never race creating the same tables."""
        guard = guards.take(self, "schema", SCHEMA_WAIT_SECONDS,
                            f"another process has been creating or migrating the state database {redact_url(self.url)}")
        try:
            self._prepare_schema_alone()
        finally:
            guard.release()

    def _prepare_schema_alone(self) -> None:
        SQLModel.metadata.create_all(self.engine, tables=[SchemaVersion.__table__])  # type: ignore[attr-defined]
        with Session(self.engine) as session:
            stored = {row.component: row.version for row in session.exec(select(SchemaVersion))}
        components = self.components()
        for component, version in stored.items():
            known = components.get(component)
            if known is not None and version > known[0]:
                raise StateError(
                    f"the state database {redact_url(self.url)} has schema version {version} for '{component}', "
                    f"newer than this reconciler knows ({known[0]}); upgrade reconciler to use it"
                )
        for component, (version, migrations) in components.items():
            current = stored.get(component)
            if current is None or current == version:
                continue
            with self.engine.begin() as connection:
                for step in range(current, version):
                    if step not in migrations:
                        raise StateError(
                            f"no migration of '{component}' state from schema version {step} to {step + 1}; "
                            "the state is a cache: move the state database aside and run plan to rebuild it"
                        )
                    migrations[step](connection)
                connection.execute(
                    SchemaVersion.__table__.update()  # type: ignore[attr-defined]
                    .where(SchemaVersion.__table__.c.component == component)  # type: ignore[attr-defined]
                    .values(version=version)
                )
        tables = [*ENGINE_TABLES, *(table for kind in self.kinds for table in kind.tables)]
        SQLModel.metadata.create_all(self.engine, tables=[table.__table__ for table in tables])  # type: ignore[attr-defined]
        for component, (version, _migrations) in components.items():
            if component in stored:
                continue
            try:
                with Session(self.engine) as session:
                    session.add(SchemaVersion(component=component, version=version))
                    session.commit()
            except IntegrityError:
                pass  # another process recorded it at the same moment

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session; commits are the caller's. Database errors become StateError."""
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except OperationalError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise StateError(f"state database {redact_url(self.url)}: {reason}") from None

    def table_names(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())

    def dispose(self) -> None:
        self.engine.dispose()


__all__ = ["StateStore", "resolve_state_url", "redact_url", "SQLAlchemyError"]
