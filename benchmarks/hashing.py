"""Hashing throughput: reconciler's sha256 of copies (hashlib, ``scan_jobs``-style threads)
against GNU ``sha256sum`` over the same files, side by side; prints the ratio.

    python benchmarks/hashing.py [--dir /dev/shm] [--files 200] [--size-mib 8] [--jobs 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from reconciler.kinds.replicas.hashing import hash_local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=None, help="where to write the files (default: the temp directory)")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size-mib", type=float, default=8.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    sha256sum = shutil.which("sha256sum")
    if sha256sum is None:
        raise SystemExit("sha256sum is not installed (coreutils)")
    root = tempfile.mkdtemp(prefix="reconciler-hashing-", dir=options.dir)
    try:
        size = int(options.size_mib * (1 << 20))
        block = os.urandom(1 << 20)
        names = []
        for index in range(options.files):
            name = f"f{index:05d}.bin"
            with open(os.path.join(root, name), "wb") as stream:
                written = 0
                while written < size:
                    chunk = block[: min(len(block), size - written)]
                    stream.write(bytes([index % 251]) + chunk[1:])
                    written += len(chunk)
            names.append(name)
        total = size * options.files
        ours, theirs = [], []
        for _ in range(options.repeat):  # interleaved, so both see the same page cache and machine
            start = time.perf_counter()
            ours_result = hash_local(root, [name.encode() for name in names], jobs=options.jobs)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            # sha256sum is one process per run, as xargs gives it its names; -P for the same parallelism
            per_process = str(max(1, len(names) // options.jobs))
            subprocess.run(["xargs", "-0", "-P", str(options.jobs), "-n", per_process,
                            sha256sum, "-z", "--"], input=b"".join(n.encode() + b"\0" for n in names),
                           cwd=root, stdout=subprocess.DEVNULL, check=True)
            theirs.append(time.perf_counter() - start)
        # The digests to compare come from one sha256sum, untimed: two writing to one pipe can
        # interleave their output mid-record once it passes a stdio buffer.
        output = subprocess.run(["xargs", "-0", sha256sum, "-z", "--"],
                                input=b"".join(n.encode() + b"\0" for n in names), cwd=root,
                                capture_output=True, check=True).stdout
        found = {record[66:].decode(): record[:64].decode() for record in output.split(b"\0") if record}
        assert all(ours_result[name.encode()] == found[name] for name in names), "the digests differ"
        mine, peer = statistics.median(ours), statistics.median(theirs)
        gib = total / (1 << 30)
        print(f"{options.files} files, {gib:.2f} GiB in all, {options.jobs} jobs, median of {options.repeat}")
        print(f"reconciler (hashlib): {mine:.2f} s ({gib / mine:.2f} GiB/s)")
        print(f"sha256sum:            {peer:.2f} s ({gib / peer:.2f} GiB/s)")
        print(f"ratio (reconciler / sha256sum): {mine / peer:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
