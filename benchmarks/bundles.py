#!/usr/bin/env python3
"""Bundles benchmark: exporting a project with a large (sparse) file beside GNU tar, in one run.

    python benchmarks/bundles.py [--size-gib 5] [--compression none|gz|zst] [--keep]

A project directory is made with exported records, a few job files and one sparse file of
--size-gib GiB (no disk space used; every byte is still read, hashed and written). The
bundle goes to a temporary directory on the same disk; with --compression none it is as big
as the sparse file, so leave room or pick zst (zeros compress to almost nothing).
Each side runs in its own process; CPU seconds and peak RSS come from wait4().

Prints wall seconds and peak RSS of `reconciler projects export` (the library call, without
a database), `verify-bundle`, and the peer: `tar -cf` (with -z or --zstd to match) followed by
`sha256sum` of the same files (what the bundle's manifest holds), and the ratios.
Targets: export wall <= 1.5 x (tar + sha256sum); export peak RSS bounded (the same whatever
the project size).

--content random writes the large file with incompressible bytes instead of a sparse hole
(it then takes disk space, and the compressor works on real data).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import processes


def run(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds, peak RSS (KiB) of one process."""
    measured = processes.run(argv)
    return measured.wall, measured.cpu, measured.rss_kib


MAKE_PROJECT = """
import os, sys
from pathlib import Path
from reconciler.providers.cryosparc import model
project, size = Path(sys.argv[1]), int(sys.argv[2])
project.mkdir()
jobs = [{"uid": f"J{index}", "project_uid": "P1", "job_type": "extract", "status": "completed",
         "parents": [], "children": []} for index in range(1, 4)]
model.write_records(project, model.Records({"uid": "P1", "uid_num": 1, "title": "big", "project_dir": str(project)},
                                           [{"uid": "W1", "project_uid": "P1"}], jobs))
for job in jobs:
    (project / job["uid"] / "small.cs").write_bytes(os.urandom(4096))
with open(project / "J3" / "particles_stack.mrc", "wb") as stream:
    if sys.argv[3] == "sparse":
        stream.truncate(size)
    else:
        block = os.urandom(1 << 20)
        for offset in range(0, size, 1 << 20):
            stream.write(block[: min(1 << 20, size - offset)])
"""


def make_project(root: Path, size: int, content: str) -> Path:
    project = root / "CS-big"
    run([sys.executable, "-c", MAKE_PROJECT, str(project), str(size), content])
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=5.0)
    parser.add_argument("--compression", choices=["none", "gz", "zst"], default="zst")
    parser.add_argument("--content", choices=["sparse", "random"], default="sparse")
    parser.add_argument("--dir", default=None, help="where to work (default: the temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not shutil.which("tar") or not shutil.which("sha256sum"):
        raise SystemExit("GNU tar and sha256sum (coreutils) are needed as the peer")
    size = int(args.size_gib * (1 << 30))
    work = Path(tempfile.mkdtemp(prefix="reconciler-bundles-", dir=args.dir))
    try:
        project = make_project(work, size, args.content)
        suffix = {"none": ".tar", "gz": ".tar.gz", "zst": ".tar.zst"}[args.compression]
        bundle = work / f"P1.bundle{suffix}"
        export = textwrap.dedent(f"""
            from pathlib import Path
            from reconciler.providers.cryosparc import model
            from reconciler.kinds.projects.bundle import export_bundle
            records = model.read_records(Path({str(project)!r}))
            export_bundle(Path({str(bundle)!r}), records, [], {{"name": "bench", "instance_id": "bench"}},
                          Path({str(project)!r}))
        """)
        verify = f"from pathlib import Path\nfrom reconciler.kinds.projects.bundle import verify_bundle\n" \
                 f"problems = verify_bundle(Path({str(bundle)!r})).problems\nassert not problems, problems\n"
        ours = run([sys.executable, "-c", export])
        checked = run([sys.executable, "-c", verify])
        peer_file = work / f"peer{suffix}"
        flag = {"none": [], "gz": ["-z"], "zst": ["--zstd"]}[args.compression]
        peer = run(["tar", *flag, "-cf", str(peer_file), "-C", str(work), "CS-big"])
        files = sorted(str(path) for path in project.rglob("*") if path.is_file() and not path.is_symlink())
        summed = run(["sha256sum", "--", *files])
        both = (peer[0] + summed[0], peer[1] + summed[1], max(peer[2], summed[2]))
        print(f"project: {args.size_gib:g} GiB ({args.content}) + records; compression: {args.compression}; "
              f"bundle {bundle.stat().st_size:,} bytes, tar {peer_file.stat().st_size:,} bytes")
        print(f"{'':28}{'wall s':>10}{'cpu s':>10}{'peak RSS':>12}")
        tar_label = f"tar {' '.join(flag) or '-cf'}".strip()
        for label, (wall, cpu, rss) in (("reconciler export", ours), ("reconciler verify", checked),
                                        (tar_label, peer), ("sha256sum", summed),
                                        (f"{tar_label} + sha256sum", both)):
            print(f"{label:28}{wall:10.2f}{cpu:10.2f}{rss / 1024:10.1f} MiB")
        print(f"ratio export/(tar + sha256sum) wall: {ours[0] / both[0]:.2f} (target <= 1.5); "
              f"export/tar alone: {ours[0] / peer[0]:.2f}; export peak RSS {ours[2] / 1024:.1f} MiB "
              f"(target: bounded, not growing with the project)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
