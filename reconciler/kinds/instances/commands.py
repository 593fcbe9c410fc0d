"""``reconciler users list`` and ``reconciler lanes list``: declared vs actual, per instance."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

import click

from reconciler.engine.listing import emit_listing
from reconciler.errors import ObserveError


@click.group("users")
def users_group() -> None:
    """CryoSPARC login users ([users."<email>"])."""


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_users(app: Any, as_json: bool) -> None:
    """Every user of every instance: email, role, name, the projects it owns, and what the config declares."""
    from reconciler.kinds.instances.observe import user_rows

    rows, problems = user_rows(app.config.model)

    def line(row: dict[str, Any]) -> str:
        owns = f", owns {', '.join(row['owns'])}" if row["owns"] else ""
        return f"{row['instance']}  {row['email']}  {row['role']}  {row['name'] or '-'}  [{row['status']}]{owns}"

    emit_listing(rows, as_json, line, problems=problems)


@click.group("lanes")
def lanes_group() -> None:
    """CryoSPARC scheduler lanes and targets ([lanes.<name>])."""


@lanes_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_lanes(app: Any, as_json: bool) -> None:
    """Every lane and target of every instance and whether the config declares it."""
    from reconciler.providers.cryosparc import scheduler
    from reconciler.providers.cryosparc.readers import Readers

    desired = app.config.model
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    with ExitStack() as stack:
        readers = Readers(desired, stack)
        for instance in desired.instances:
            try:
                db = readers.get(instance).db
            except ObserveError as error:
                problems.append(str(error))
                continue
            targets = scheduler.targets(db)
            for lane in scheduler.lanes(db):
                declared = desired.lanes.get(lane["name"])
                rows.append({"instance": instance, "lane": lane["name"], "type": lane.get("type"),
                             "declared": declared is not None and (declared.instances is None
                                                                   or instance in declared.instances),
                             "targets": [{"name": target["name"], "ssh_str": target.get("ssh_str"),
                                          "worker_bin_path": target.get("worker_bin_path")}
                                         for target in targets if target.get("lane") == lane["name"]]})

    def line(row: dict[str, Any]) -> str:
        names = ", ".join(target["name"] for target in row["targets"]) or "no targets"
        return (f"{row['instance']}  {row['lane']} ({row['type']})  {names}"
                + ("" if row["declared"] else "  [not in the config]"))

    emit_listing(rows, as_json, line, problems=problems)


@click.group("instances")
def instances_group() -> None:
    """CryoSPARC instances: whole-instance migrations."""


@instances_group.command("migration")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def migration_report(app: Any, as_json: bool) -> None:
    """What whole-instance migrations moved: old uid -> new uid, path, size, and each step's time."""
    from sqlmodel import select

    from reconciler.kinds.instances.tables import MigratedProject
    from reconciler.providers.cryosparc.model import uid_number
    from reconciler.units import human_bytes

    with app.store.session() as session:
        rows = [row.model_dump() for row in session.exec(select(MigratedProject))]
    rows.sort(key=lambda row: (row["target"], row["source"], uid_number(row["source_uid"])))
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        state = "moved" if row["attached_at"] else ("copied" if row["copied_at"] else (
            "detached" if row["detached_at"] else "started"))
        size = f"{row['files']:,} files, {human_bytes(row['bytes'] or 0)}" if row["files"] is not None else "-"
        click.echo(f"{row['source']}/{row['source_uid']} -> {row['target']}/{row['new_uid'] or '?'}  {row['path']}  "
                   f"({size})  [{state}]")
    moved = sum(1 for row in rows if row["attached_at"])
    click.echo(f"{moved} of {len(rows)} project(s) moved.")
