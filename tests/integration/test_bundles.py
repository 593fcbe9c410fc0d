"""Portable project bundles end to end: export from one generated instance, verify, import into
another (real MongoDB wire-protocol server, real files, the real CLI), and every way a bundle
can be wrong refused with nothing left behind."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pytest

from reconciler.kinds.projects.generator import make_instance
from reconciler.providers.cryosparc import model
from reconciler.state import lock
from reconciler.state.store import StateStore
from tests.conftest import popen_cli
from tests.integration.conftest import tree


@dataclass
class Pair:
    site: Any
    client: Any
    old_db: str
    new_db: str
    old_dirs: list[Path]

    def db(self, instance: str) -> Any:
        return self.client[self.old_db if instance == "old" else self.new_db]

    def documents(self, instance: str, uid: str) -> dict[str, Any]:
        db = self.db(instance)

        def plain(items: Any) -> list[dict[str, Any]]:
            return sorted(({k: v for k, v in item.items() if k != "_id"} for item in items), key=lambda d: d["uid"])

        return {"project": db.projects.find_one({"uid": uid}, {"_id": 0}),
                "workspaces": plain(db.workspaces.find({"project_uid": uid})),
                "jobs": plain(db.jobs.find({"project_uid": uid}))}

    def nothing_imported(self, before: int, destination: Path) -> None:
        assert self.db("new").projects.count_documents({}) == before
        assert self.db("new").jobs.count_documents({"project_uid": {"$nin": ["P1", "P2"]}}) == 0
        assert not destination.exists()
        assert not list(destination.parent.glob(f".{destination.name}.importing*"))


@pytest.fixture
def pair(site, mongo) -> Pair:
    client = pymongo.MongoClient(mongo.uri)
    tag = uuid.uuid4().hex[:8]
    old_db, new_db = f"bold_{tag}", f"bnew_{tag}"
    made = make_instance(client[old_db], site.root / "old", "id-old", projects=2, jobs=3)
    make_instance(client[new_db], site.root / "new", "id-new", projects=2, jobs=2, seed=5)
    # the target knows bob by email under another id; tags and sharing must not travel
    client[new_db].users.insert_one({"_id": "bob-on-new", "name": "Bob", "emails": [{"address": "bob@example.org"}]})
    client[new_db].users.delete_one({"_id": "user-bob"})
    client[old_db].projects.update_one({"uid": "P1"}, {"$set": {"tags": ["t1"], "shared_with": ["user-alice"]}})
    site.write(f'[databases.cs-old]\nuri = "{mongo.uri}"\ndatabase = "{old_db}"\n\n'
               f'[databases.cs-new]\nuri = "{mongo.uri}"\ndatabase = "{new_db}"\n\n'
               '[instances.old]\ndatabase = "cs-old"\ninstance_id = "id-old"\n\n'
               '[instances.new]\ndatabase = "cs-new"\ninstance_id = "id-new"\n')
    yield Pair(site, client, old_db, new_db, [project.project_dir for project in made])
    client.drop_database(old_db)
    client.drop_database(new_db)
    client.close()


def export(pair: Pair, name: str, *extra: str) -> Path:
    bundle = pair.site.root / name
    result = pair.site.cli("projects", "export", "P1", "--instance", "old", "-o", str(bundle), *extra)
    assert result.code == 0, result.err
    return bundle


def without(document: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key not in keys}


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.zst"])
def test_export_verify_import_gives_the_same_project_under_new_ids(pair, suffix):
    bundle = export(pair, f"P1.bundle{suffix}")
    assert not list(bundle.parent.glob(f".{bundle.name}.partial")), "written under a temporary name, renamed"
    verified = pair.site.cli("projects", "verify-bundle", str(bundle))
    assert verified.code == 0 and verified.out.startswith("ok ")
    destination = pair.site.root / "new" / "CS-apo-imported"
    result = pair.site.cli("projects", "import", str(bundle), "--instance", "new", "--path", str(destination))
    assert result.code == 0, result.err
    assert "as P3" in result.out, "P1 and P2 are taken on new: the next free uid"
    assert "dropped tags, shared_with" in result.err

    before, after = pair.documents("old", "P1"), pair.documents("new", "P3")
    assert after["project"]["owner_user_id"] == "bob-on-new", "owner mapped by email"
    assert after["project"]["imported_from"] == {"instance_id": "id-old", "uid": "P1", "bundle": bundle.name}
    assert "tags" not in after["project"] and "shared_with" not in after["project"]
    assert without(after["project"], "uid", "uid_num", "project_dir", "owner_user_id", "imported_from") == without(
        before["project"], "uid", "uid_num", "project_dir", "owner_user_id", "tags", "shared_with")
    assert [without(job, "project_uid") for job in after["jobs"]] == [without(job, "project_uid")
                                                                      for job in before["jobs"]]
    assert {job["project_uid"] for job in after["jobs"]} == {"P3"}
    old_ids = {doc["_id"] for doc in pair.db("old").jobs.find({"project_uid": "P1"})}
    new_ids = {doc["_id"] for doc in pair.db("new").jobs.find({"project_uid": "P3"})}
    assert not old_ids & new_ids, "new document ids"

    source, copied = tree(pair.old_dirs[0]), tree(destination)
    rewritten = {model.PROJECT_FILE, model.WORKSPACES_FILE, model.MANIFEST_FILE, model.LOCK_FILE}
    data = {path for path in source if path not in rewritten and not path.endswith("job.json")
            and "import_movies" not in path}
    assert {path: copied[path] for path in data} == {path: source[path] for path in data}
    assert model.read_lock(destination) == "id-new"
    assert model.read_records(destination).project["uid"] == "P3"
    assert "links to data outside the project were not carried" in result.err


def test_import_with_a_chosen_uid_and_an_unknown_owner(pair):
    bundle = export(pair, "P1.bundle.tar")
    pair.client[pair.new_db].users.delete_one({"_id": "bob-on-new"})
    destination = pair.site.root / "new" / "x"
    refused = pair.site.cli("projects", "import", str(bundle), "--instance", "new", "--path", str(destination))
    assert refused.code == 1 and "never given to a random user" in refused.err
    assert not destination.exists()
    taken = pair.site.cli("projects", "import", str(bundle), "--instance", "new", "--path", str(destination),
                          "--uid", "P2", "--owner-fallback", "user-alice")
    assert taken.code == 1 and "P2 is taken on new" in taken.err
    done = pair.site.cli("projects", "import", str(bundle), "--instance", "new", "--path", str(destination),
                         "--uid", "P40", "--owner-fallback", "alice@example.org")
    assert done.code == 0, done.err
    assert pair.documents("new", "P40")["project"]["owner_user_id"] == "user-alice"
    assert "assigned to user-alice" in done.err


def test_metadata_only_bundle(pair):
    bundle = export(pair, "P1.meta.tar", "--metadata-only")
    with tarfile.open(bundle) as tar:
        assert [member.name for member in tar.getmembers()] == ["bundle.json", "MANIFEST.sha256"]
    destination = pair.site.root / "new" / "meta"
    assert pair.site.cli("projects", "import", str(bundle), "--instance", "new", "--path", str(destination)).code == 0
    assert len(model.read_records(destination).jobs) == 3


def _rewrite(source: Path, target: Path, change) -> None:
    """Copy a plain-tar bundle member by member, letting ``change(member, data)`` alter it
    (return None to drop a member, or a list of (member, data) to emit)."""
    with tarfile.open(source) as old, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as new:
        for member in old.getmembers():
            data = old.extractfile(member).read() if member.isreg() else None
            for item, content in change(member, data) or []:
                new.addfile(item, io.BytesIO(content) if content is not None else None)


def _extra(name: str, **fields: Any) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    content = fields.pop("content", None)
    for key, value in fields.items():
        setattr(info, key, value)
    if content is not None:
        info.size = len(content)
    return info, content


def _sized(member: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    """``member`` carrying ``data`` instead of its own content."""
    copy = member.replace(deep=False)
    copy.size = len(data)
    return copy, data


def _after_header(extra: tuple[tarfile.TarInfo, bytes | None]):
    """A change that inserts one member right after bundle.json."""
    return lambda m, d: [(m, d)] + ([extra] if m.name == "bundle.json" else [])


def _chain() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    from tests.unit.projects.test_bundle_safety import path_max_chain

    return path_max_chain()


CASES = {
    "tampered member": (lambda m, d: [_sized(m, d + b"!") if m.name.endswith("J1_output.cs") else (m, d)],
                        "checksum mismatch"),
    "missing member": (lambda m, d: None if m.name.endswith("J2/job.json") else [(m, d)],
                       "listed in the manifest but missing"),
    "extra member": (_after_header(_extra("data/J1/sneaky.sh", content=b"rm -rf ~\n")), "not in the manifest"),
    "dot-dot entry": (_after_header(_extra("data/../../x", content=b"x")), "'..' in the path"),
    "absolute entry": (_after_header(_extra("/etc/x", content=b"x")), "absolute path"),
    "symlink to /": (_after_header(_extra("data/root", type=tarfile.SYMTYPE, linkname="/")),
                     "symlink to the absolute path"),
    "device file": (_after_header(_extra("data/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)),
                    "not a regular file"),
    # the CVE-2025-4517 shape: a link chain whose physical resolution passes PATH_MAX, then a file
    # written through a link that lexically stays inside data/ and physically leaves it
    "symlink chain past PATH_MAX": (lambda m, d: [(m, d)] + (_chain() if m.name == "bundle.json" else []),
                                    "beneath the symlink data/escape"),
    "bad bundle.json": (lambda m, d: [_sized(m, b'{"format_version": 9}') if m.name == "bundle.json" else (m, d)],
                        "does not follow the bundle schema"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_bundle_is_refused_with_nothing_left_behind(pair, case):
    bundle = export(pair, "P1.bundle.tar")
    change, message = CASES[case]
    broken = pair.site.root / f"broken-{sorted(CASES).index(case)}.tar"
    _rewrite(bundle, broken, change)
    verified = pair.site.cli("projects", "verify-bundle", str(broken))
    assert verified.code == 1 and message in verified.out, verified.out
    destination = pair.site.root / "new" / "never"
    before = pair.db("new").projects.count_documents({})
    result = pair.site.cli("projects", "import", str(broken), "--instance", "new", "--path", str(destination))
    assert result.code == 1 and "failed verification, nothing was imported" in result.err
    pair.nothing_imported(before, destination)
    assert not (pair.site.root / "x").exists() and not Path("/etc/x").exists()
    assert not list(pair.site.root.rglob("pwned"))


def test_a_truncated_bundle_is_refused(pair):
    bundle = export(pair, "P1.bundle.tar.zst")
    truncated = pair.site.root / "truncated.tar.zst"
    truncated.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    verified = pair.site.cli("projects", "verify-bundle", str(truncated))
    assert verified.code == 1 and "truncated or damaged" in verified.out
    destination = pair.site.root / "new" / "never"
    before = pair.db("new").projects.count_documents({})
    assert pair.site.cli("projects", "import", str(truncated), "--instance", "new", "--path",
                         str(destination)).code == 1
    pair.nothing_imported(before, destination)


def test_signed_bundles(pair):
    key, other = pair.site.root / "key", pair.site.root / "other-key"
    key.write_bytes(os.urandom(32))
    other.write_bytes(os.urandom(32))
    signed = export(pair, "signed.tar", "--sign-key", str(key))
    unsigned = export(pair, "unsigned.tar")
    assert pair.site.cli("projects", "verify-bundle", str(signed), "--verify-key", str(key)).code == 0
    wrong = pair.site.cli("projects", "verify-bundle", str(signed), "--verify-key", str(other))
    assert wrong.code == 1 and "signature does not match" in wrong.out
    bare = pair.site.cli("projects", "import", str(unsigned), "--instance", "new", "--path",
                         str(pair.site.root / "new" / "u"), "--verify-key", str(key))
    assert bare.code == 1 and "not signed" in bare.err
    # a forger who edits a member and recomputes the manifest still cannot sign it
    import hashlib

    forged = pair.site.root / "forged.tar"
    edited = b"forged results\n"

    def forge(member, data):
        if member.name.endswith("J1_output.cs"):
            return [_sized(member, edited)]
        if member.name == "MANIFEST.sha256":
            lines = [f"{hashlib.sha256(edited).hexdigest()}  {line.split('  ', 1)[1]}"
                     if line.endswith("J1_output.cs") else line for line in data.decode().splitlines()]
            return [_sized(member, ("\n".join(lines) + "\n").encode())]
        return [(member, data)]

    _rewrite(signed, forged, forge)
    unchecked = pair.site.cli("projects", "verify-bundle", str(forged))
    assert unchecked.code == 0, "without a key the forgery is self-consistent"
    checked = pair.site.cli("projects", "verify-bundle", str(forged), "--verify-key", str(key))
    assert checked.code == 1 and "signature does not match" in checked.out


@pytest.mark.state_store
def test_kill_9_during_an_import_then_the_next_run_rolls_back_and_imports(pair):
    big = pair.old_dirs[0] / "J2" / "particles"
    big.mkdir()
    for index in range(3000):
        (big / f"p{index:05d}.mrc").write_bytes(os.urandom(2048))
    bundle = export(pair, "P1.bundle.tar")
    destination = pair.site.root / "new" / "CS-apo"
    args = pair.site.args("projects", "import", str(bundle), "--instance", "new", "--path", str(destination))
    process = popen_cli(args)
    deadline = time.monotonic() + 60
    staging = destination
    while process.poll() is None and time.monotonic() < deadline:
        found = list(destination.parent.glob(f".{destination.name}.importing-*"))
        if found and (found[0] / "J2" / "particles").is_dir() and len(os.listdir(found[0] / "J2" / "particles")) > 100:
            staging = found[0]
            break
        time.sleep(0.003)
    assert process.poll() is None, "the import finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert staging.exists() and not destination.exists()

    again = pair.site.run("projects", "import", str(bundle), "--instance", "new", "--path", str(destination))
    assert again.code == 0, again.err
    assert "rolled back the unfinished import" in again.err
    assert not staging.exists()
    assert pair.db("new").projects.count_documents({"imported_from.uid": "P1"}) == 1
    assert len(os.listdir(destination / "J2" / "particles")) == 3000


@pytest.mark.state_store
def test_declared_bundle_source_is_imported_by_plan_and_apply(pair):
    bundle = export(pair, "P1.bundle.tar.gz")
    destination = pair.site.root / "new" / "declared"
    config = pair.site.config.read_text()
    pair.site.write(config + f'\n[projects.carried]\nsource = "bundle:{bundle}"\ninstance = "new"\n'
                             f'path = "{destination}"\nstate = "archived"\n')
    plan = pair.site.cli("plan")
    assert "+ import:" in plan.out and "into new as P3" in plan.out, plan.out
    applied = pair.site.cli("apply", "--auto-approve")
    assert applied.code == 0, applied.err
    imported = pair.documents("new", "P3")["project"]
    assert imported["archived"] and imported["project_dir"] == str(destination)
    assert pair.site.cli("plan", "--detailed-exitcode").code == 0
    listing = json.loads(pair.site.cli("projects", "list", "--json", "--no-size").out)
    assert any(row["name"] == "carried" and row["in_sync"] for row in listing)


def test_export_and_report_to_a_missing_directory_fail_in_one_line(pair):
    missing = pair.site.root / "no-such-dir"
    result = pair.site.cli("projects", "export", "P1", "--instance", "old", "-o", str(missing / "P1.tar"))
    assert result.code == 1 and result.err.startswith("Error: cannot make the bundle") and "internal" not in result.err
    report = pair.site.cli("report", "--html", str(missing / "r.html"))
    assert report.code == 1 and "does its directory exist" in report.err
    assert not missing.exists()


def test_an_import_takes_the_state_lock(pair):
    bundle = export(pair, "P1.bundle.tar")
    destination = pair.site.root / "new" / "locked"
    before = pair.db("new").projects.count_documents({})
    store = StateStore(pair.site.state_url)
    try:
        with lock.held(store, "apply"):
            refused = pair.site.run("projects", "import", str(bundle), "--instance", "new", "--path", str(destination))
    finally:
        store.dispose()
    assert refused.code == 1 and "locked by" in refused.err, refused.err
    pair.nothing_imported(before, destination)
    assert pair.site.cli("projects", "import", str(bundle), "--instance", "new", "--path", str(destination)).code == 0


def test_another_runs_staging_directory_is_never_reused_or_removed(pair):
    """Another import into the same place (say, from another state database) is extracting: its
    staging directory is its own; this import makes its own and leaves that one alone."""
    bundle = export(pair, "P1.bundle.tar")
    destination = pair.site.root / "new" / "contested"
    foreign = destination.with_name(f".{destination.name}.importing")
    (foreign / "J1").mkdir(parents=True)
    (foreign / "J1" / "half.mrc").write_bytes(b"another run's file")
    result = pair.site.cli("projects", "import", str(bundle), "--instance", "new", "--path", str(destination))
    assert result.code == 0, result.err
    assert (foreign / "J1" / "half.mrc").read_bytes() == b"another run's file"
    assert (destination / "J1").is_dir() and not (destination / "J1" / "half.mrc").exists()
