"""The five datatypes of a CryoSPARC Live session and the files each one holds.

This table is the one place that maps datatypes to files (the README shows it):

| datatype    | files (relative to the session directory)                   | states | deleted by reconciler |
|-------------|--------------------------------------------------------------|--------|-----------------------|
| raw         | ``import_movies/`` links and the movie files they point to   | yes    | never (marked only)   |
| micrographs | ``motioncorrected/``                                         | yes    | yes                   |
| thumbnails  | ``thumbnails/``                                              | no     | never                 |
| particles   | ``extract/``                                                 | yes    | yes                   |
| metadata    | ``exposures.bson``, ``ctfestimated/``                        | yes    | yes                   |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATES = ("active", "archiving", "archived", "deleted")


@dataclass(frozen=True)
class Datatype:
    name: str
    folders: tuple[str, ...]
    files: tuple[str, ...] = ()
    stateful: bool = True
    deletable: bool = True
    follow_links: bool = False  # count (and list) what links point to as well


DATATYPES: dict[str, Datatype] = {
    item.name: item for item in (
        Datatype("raw", ("import_movies",), deletable=False, follow_links=True),
        Datatype("micrographs", ("motioncorrected",)),
        Datatype("thumbnails", ("thumbnails",), stateful=False, deletable=False),
        Datatype("particles", ("extract",)),
        Datatype("metadata", ("ctfestimated",), files=("exposures.bson",)),
    )
}
STATEFUL = tuple(name for name, item in DATATYPES.items() if item.stateful)


@dataclass(frozen=True)
class DataFile:
    path: str  # absolute
    size: int
    link: bool = False  # a link in the session (raw: the movie it points to is listed too)


def collect(session_dir: Path, datatype: str) -> list[DataFile]:
    """Every file of ``datatype`` in ``session_dir``, sorted. Raises OSError (with the
    filename) when something cannot be read."""
    spec = DATATYPES[datatype]
    found: list[DataFile] = []
    for name in spec.files:
        path = session_dir / name
        if path.is_file():
            found.append(DataFile(str(path), path.stat().st_size))
    for folder in spec.folders:
        root = session_dir / folder
        if not root.is_dir():
            continue
        stack = [root]
        while stack:
            directory = stack.pop()
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_symlink():
                        found.append(DataFile(entry.path, entry.stat(follow_symlinks=False).st_size, link=True))
                        if spec.follow_links:
                            target = Path(os.path.realpath(entry.path))
                            if target.is_file():
                                found.append(DataFile(str(target), target.stat().st_size))
                    else:
                        found.append(DataFile(entry.path, entry.stat(follow_symlinks=False).st_size))
    return sorted(found, key=lambda item: item.path)


def total(files: list[DataFile]) -> tuple[int, int]:
    """(file count, bytes) of the data itself; links count as files but not as bytes."""
    return len(files), sum(item.size for item in files if not item.link)
