"""The backups' part of the report (freshness, retention, a timeline of which backups the policy
keeps and why, size and free space over time) and the figures each run records for it: per
backed-up database the number and bytes of its backups and the free space of its destination."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.engine.report import Measure, ReportContext, ReportSection, fragment
from reconciler.units import format_duration

ORDER = 20


def _entry(key: str, database: Any, ctx: ReportContext) -> dict[str, Any]:
    from reconciler.kinds.backups.catalog import read_catalog
    from reconciler.kinds.backups.diff import age_text, database_address
    from reconciler.kinds.backups.retention import decide, policy_of, policy_text

    backup = database.backup
    now = ctx.generated_at
    entry: dict[str, Any] = {"key": key, "address": database_address(key), "database": database.database,
                             "to": backup.to, "every": format_duration(backup.every),
                             "policy": policy_text(backup.retention), "count": 0, "bytes": 0, "newest": None,
                             "age": None, "fresh": False, "keep": 0, "remove": 0, "problem": None, "timeline": []}
    try:
        catalog = read_catalog(Path(backup.to), key)
    except OSError as error:
        entry["problem"] = f"{backup.to}: {error.strerror}"
        return entry
    backups = catalog.backups
    entry["count"] = len(backups)
    entry["bytes"] = sum(item.manifest.bytes for item in backups)
    if backups:
        newest = backups[-1].time
        entry["newest"] = newest
        entry["age"] = age_text(now - newest)
        entry["fresh"] = now - newest < backup.every
        decision = decide([item.time for item in backups], policy_of(backup.retention))
        entry["keep"], entry["remove"] = len(decision.keep), len(decision.remove)
        why = {index: ", ".join(reasons) for index, reasons in decision.keep}
        entry["timeline"] = [{"time": item.time, "name": item.backup_id, "kept": index in why,
                              "why": why.get(index, "no rule of the policy keeps it: the next prune removes it")}
                             for index, item in enumerate(backups)]
    if catalog.unreadable:
        entry["problem"] = "; ".join(catalog.unreadable[:3])
    observed = ctx.error_of(database_address(key))
    if observed:
        entry["problem"] = "; ".join(filter(None, [entry["problem"], f"could not be observed: {observed}"]))
        entry["fresh"] = False
    return entry


def section(desired: Any, ctx: ReportContext) -> ReportSection:
    """Per backed-up database: its newest backup and how fresh it is, what retention keeps, on a
    timeline; then total size and free space at the destination over time."""
    rows = [_entry(key, database, ctx) for key, database in desired.databases.items() if database.backup]
    data = {"rows": rows, "sizes": ctx.history("database", "bytes"), "free": ctx.history("database", "free_bytes")}
    return ReportSection(key="backups", title="Database backups", template=fragment(__package__), data=data,
                         order=ORDER, count=f"{len(rows)} backed-up {'database' if len(rows) == 1 else 'databases'}")


def measure(desired: Any) -> list[Measure]:
    """Per backed-up database: how many backups its destination holds and their bytes (from the
    manifests, as a directory listing reads them now), and the destination's free space."""
    from reconciler.kinds.backups.catalog import read_catalog
    from reconciler.kinds.backups.diff import database_address

    found: list[Measure] = []
    for key, database in desired.databases.items():
        if database.backup is None:
            continue
        destination = Path(database.backup.to)
        try:
            catalog = read_catalog(destination, key)
            usage = shutil.disk_usage(destination)
        except OSError:
            continue  # an absent destination: its plan says so; no figure is better than a wrong one
        now = datetime.now(UTC)
        address = database_address(key)
        found += [Measure(address, "backups", len(catalog.backups), now),
                  Measure(address, "bytes", sum(item.manifest.bytes for item in catalog.backups), now),
                  Measure(address, "free_bytes", usage.free, now)]
    return found
