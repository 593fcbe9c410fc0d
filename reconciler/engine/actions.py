"""Actions and plans: the plan-JSON contract (format_version 1), as frozen pydantic models."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler import __version__
from reconciler.errors import ApplyError

FORMAT_VERSION = 1


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
_LIST_CHUNK = 4096


def _canonical_chunks(value: Any) -> Iterator[str]:
    """The canonical JSON of ``value`` (what ``_ENCODER.encode`` gives) in pieces: dicts
    with string keys and lists are taken apart here, so a list of a million paths is encoded
    4096 items at a time by the C encoder instead of item by item in Python
    (``iterencode`` never uses the C encoder)."""
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        yield "{"
        for number, key in enumerate(sorted(value)):
            yield ("," if number else "") + _ENCODER.encode(key) + ":"
            yield from _canonical_chunks(value[key])
        yield "}"
    elif isinstance(value, (list, tuple)) and len(value) > _LIST_CHUNK:
        yield "["
        for start in range(0, len(value), _LIST_CHUNK):
            yield ("," if start else "") + _ENCODER.encode(list(value[start:start + _LIST_CHUNK]))[1:-1]
        yield "]"
    else:
        yield _ENCODER.encode(value)


def sha256_of(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of ``value`` (sorted keys, no spaces, UTF-8),
    streamed into the hash: a plan with a million paths never holds its JSON text in memory
    to hash it."""
    digest = hashlib.sha256()
    buffer: list[str] = []
    size = 0
    for chunk in _canonical_chunks(value):
        buffer.append(chunk)
        size += len(chunk)
        if size >= 1 << 16:
            digest.update("".join(buffer).encode("utf-8"))
            buffer, size = [], 0
    digest.update("".join(buffer).encode("utf-8"))
    return digest.hexdigest()


class Details(BaseModel):
    """The typed hand-off from a kind's diff to its executor: one subclass per action kind,
    built by the diff and read back by the executor with ``Details.of(action)``, so no
    executor digs in an untyped dict. The plan holds ``as_dict()``: exactly the declared
    fields (by alias where a name is a Python keyword, e.g. ``from``), so typing changes
    neither the plan JSON nor any action id."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def as_dict(self) -> dict[str, Any]:
        """The fields given when it was made (an optional field left out stays out of the plan)."""
        return self.model_dump(by_alias=True, exclude_unset=True)

    @classmethod
    def of(cls, action: Action) -> Self:
        """The details of ``action`` as this model; a saved plan whose details do not fit (written by
        another version of reconciler) is an ApplyError naming the action, never a KeyError."""
        try:
            return cls.model_validate(action.details)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "details"
            raise ApplyError(f"{action.address}: the planned {action.kind} does not fit this version of reconciler "
                             f"({where}: {first['msg']}); run plan again") from None


class Action(BaseModel):
    """One change to the world, planned by a resource kind and carried out by its executor.

    ``id`` hashes address, kind and details, so the same change planned twice has
    the same id. ``precondition`` hashes the observed facts the action relies on:
    ``apply PLANFILE`` re-observes and refuses the plan when it differs.
    ``depends_on`` holds ids (or, as a kind emits them, addresses) of actions that
    must succeed first; ``before`` holds addresses whose actions must wait for this
    one. The planner resolves both into ids in ``depends_on``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    address: str
    kind: str
    destructive: bool = False
    reason: str
    precondition: str
    details: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    before: list[str] = Field(default_factory=list)

    @classmethod
    def create(
        cls,
        *,
        address: str,
        kind: str,
        reason: str,
        facts: Any = None,
        precondition: str | None = None,
        details: dict[str, Any] | Details | None = None,
        destructive: bool = False,
        depends_on: list[str] | None = None,
        before: list[str] | None = None,
    ) -> Action:
        """Build an action, deriving ``id`` from (address, kind, details) and
        ``precondition`` from ``facts`` (any JSON-able value the action relies on),
        unless the kind computed ``precondition`` itself (e.g. streaming over columns)."""
        details = details.as_dict() if isinstance(details, Details) else (details or {})
        return cls(
            id=sha256_of({"address": address, "kind": kind, "details": details})[:16],
            address=address,
            kind=kind,
            destructive=destructive,
            reason=reason,
            precondition=precondition if precondition is not None else sha256_of(facts),
            details=details,
            depends_on=list(depends_on or []),
            before=list(before or []),
        )

    @property
    def file_count(self) -> int | None:
        """Files the action touches, when the kind says (``details.file_count`` or ``details.files``)."""
        if isinstance(self.details.get("file_count"), int):
            return int(self.details["file_count"])
        files = self.details.get("files")
        return len(files) if isinstance(files, list) else None

    @property
    def byte_count(self) -> int | None:
        """Bytes the action moves or removes, when the kind says (``details.bytes``)."""
        value = self.details.get("bytes")
        return int(value) if isinstance(value, int) else None


class AddressMessage(BaseModel):
    """A message about one address: an observation error, or a note (e.g. "waiting: 3 files settling")."""

    model_config = ConfigDict(frozen=True)

    address: str
    message: str


class Plan(BaseModel):
    """What a run would do. Serialised as the plan file (JSON, format_version 1)."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    tool_version: str = __version__
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    config_sha256: str
    applyable: bool = True
    targets: list[str] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    notes: list[AddressMessage] = Field(default_factory=list)
    errors: list[AddressMessage] = Field(default_factory=list)
    # Nothing failed, but an address needs the operator (e.g. a removable replica offline past
    # its stale_after): ``reconcile`` exits 2 and ``plan --detailed-exitcode`` does not exit 0.
    warnings: list[AddressMessage] = Field(default_factory=list)
    summary: dict[str, int] = Field(default_factory=dict)

    @property
    def plan_id(self) -> str:
        """A stable id of this plan (its config, creation time and actions): used by the journal."""
        return sha256_of(
            {"config": self.config_sha256, "created_at": self.created_at, "actions": [a.id for a in self.actions]}
        )[:16]

    @property
    def destructive_actions(self) -> list[Action]:
        return [action for action in self.actions if action.destructive]

    def to_json(self) -> str:
        """The plan file text (any password that reached it removed: ``reconciler.secrets``)."""
        from reconciler.secrets import redact

        return redact(self.model_dump_json(indent=2) + "\n")


def summarize(actions: list[Action]) -> dict[str, int]:
    """Counts per action kind plus ``destructive``: the plan JSON's ``summary``."""
    summary: dict[str, int] = {}
    for action in actions:
        summary[action.kind] = summary.get(action.kind, 0) + 1
    summary["destructive"] = sum(1 for action in actions if action.destructive)
    return summary
