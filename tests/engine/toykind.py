"""A tiny resource kind that exists only for the engine's tests.

It manages the files of one directory: each declared file must exist with its
content; files in the directory that are not declared are removed
(destructively). It has knobs the engine tests need: ``after`` (ordering),
``fail`` (an executor that fails), ``slow`` (an executor that takes time),
``hold`` (an executor that touches ``HOLD.waiting`` and then waits until the file
``HOLD`` exists: a run the test holds mid-action for as long as it wants, for locks
and kill -9, with no timing window). It is a real kind over real files, not a mock; it lives in
tests/ so the engine is proven without any production kind.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from pydantic import Field

from reconciler.config.model import LocalPath, Section
from reconciler.engine.actions import Action, AddressMessage
from reconciler.engine.kind import Diff, Kind, Observation, RunContext, executor
from reconciler.errors import ApplyError, ObserveError
from reconciler.fsutil import atomic_write_text
from reconciler.units import Duration, Size


class ToyFile(Section):
    content: str = ""
    after: list[str] = Field(default_factory=list, description="Toy files that must be written first.")
    fail: bool = False
    slow: Duration = Field(default="0s", validate_default=True)
    ignore_stop: bool = False  # a slow write that does not stop when the run is asked to
    max_size: Size | None = None
    hold: str = ""


class ToySection(Section):
    dir: LocalPath
    files: dict[str, ToyFile] = Field(default_factory=dict)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ToyKind(Kind):
    name = "toy"
    address_prefix = "toy"
    sections = {"toy": (ToySection | None, Field(default=None, description="Test-only kind."))}

    def addresses(self, desired):  # type: ignore[no-untyped-def]
        section = desired.toy
        return [self.address(name) for name in section.files] if section else []

    def check(self, desired, base_dir):  # type: ignore[no-untyped-def]
        section = desired.toy
        problems = []
        if section:
            for name, spec in section.files.items():
                for other in spec.after:
                    if other not in section.files:
                        problems.append((("toy", "files", name, "after"), f"toy file '{name}' comes after unknown '{other}'"))
        return problems

    def observe(self, desired, ctx: RunContext) -> Observation:  # type: ignore[no-untyped-def]
        section = desired.toy
        if section is None:
            return Observation(facts={})
        root = Path(section.dir)
        if not root.is_dir():
            raise ObserveError(f"toy directory {root} does not exist; create it")
        facts: dict[str, str] = {}
        errors = []
        for entry in sorted(os.listdir(root)):
            if entry.startswith("."):
                continue
            path = root / entry
            if path.is_dir():
                errors.append(AddressMessage(address=self.address(entry), message=f"{path} is a directory"))
                continue
            facts[entry] = _digest(path.read_bytes())
        return Observation(facts=facts, errors=errors)

    def diff(self, desired, observation: Observation) -> Diff:  # type: ignore[no-untyped-def]
        section = desired.toy
        if section is None:
            return Diff()
        current: dict[str, str] = observation.facts or {}
        failed = {error.address for error in observation.errors}
        actions = []
        for name, spec in section.files.items():
            address = self.address(name)
            if address in failed:
                continue
            want = _digest(spec.content.encode())
            have = current.get(name)
            if have == want:
                continue
            actions.append(
                Action.create(
                    address=address,
                    kind="write",
                    reason="missing" if have is None else "content differs",
                    facts={"have": have},
                    details={"dir": section.dir, "name": name, "content": spec.content,
                             "bytes": len(spec.content.encode()), "fail": spec.fail,
                             "slow": spec.slow.total_seconds(), "ignore_stop": spec.ignore_stop,
                             **({"hold": spec.hold} if spec.hold else {})},
                    depends_on=[self.address(other) for other in spec.after],
                )
            )
        for name in sorted(set(current) - set(section.files)):
            actions.append(
                Action.create(
                    address=self.address(name),
                    kind="remove",
                    reason="not declared in the config",
                    facts={"have": current[name]},
                    details={"dir": section.dir, "name": name},
                    destructive=True,
                )
            )
        return Diff(actions=actions)

    @executor("write")
    def write(self, action: Action, ctx: RunContext) -> str:
        details = action.details
        deadline = time.monotonic() + float(details["slow"])
        if details["slow"]:
            (Path(details["dir"]) / f".started-{details['name']}").touch()
        while time.monotonic() < deadline:
            if ctx.stop.is_set():
                if not details.get("ignore_stop"):
                    raise ApplyError(f"{action.address}: stopped before writing; the next run writes it")
                (Path(details["dir"]) / f".stop-seen-{details['name']}").touch()
            time.sleep(0.05)
        if details.get("hold"):
            hold = Path(details["hold"])
            Path(f"{hold}.waiting").touch()
            while not hold.exists():
                time.sleep(0.02)
        if details["fail"]:
            raise ApplyError(f"{action.address}: told to fail")
        content = details["content"]
        atomic_write_text(Path(details["dir"]) / details["name"], content)
        return f"wrote {len(content)} bytes"

    @executor("remove")
    def remove(self, action: Action, ctx: RunContext) -> str:
        (Path(action.details["dir"]) / action.details["name"]).unlink(missing_ok=True)
        return "removed"


KIND = ToyKind
