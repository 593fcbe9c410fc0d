"""Config of the replicas kind: ``[origins.*]``, ``[replicas."<path or ssh URL>"]``, ``[ssh]``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from reconciler.config.model import LocalPath, Section, resolve_path
from reconciler.hosts import is_this_host
from reconciler.providers.location import Location, SshSettings
from reconciler.units import Duration, Size


def unsafe_origin_name(name: str) -> str | None:
    """Why ``name`` cannot be an origin's name, or None. An origin's name is one directory name
    on every replica, so it must be a single, ordinary path component."""
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "is '.' or '..'"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if "\x00" in name or any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "holds a control character"
    if name.startswith("-"):
        return "starts with '-'"
    if len(name.encode("utf-8")) > 255:
        return "is longer than 255 bytes"
    return None


class TrimConfig(Section):
    """Remove origin files that enough replicas provably hold (destructive: needs --allow-destroy)."""

    min_copies: int = Field(
        default=2, ge=1, le=100,
        description="Replicas whose copy must be verified by sha256 within their scrub_every (and is checked "
                    "again right before the removal) for an origin file to be removed.",
    )
    older_than: Duration = Field(description='Only files whose mtime is older than this, e.g. "30d".')


class OriginConfig(Section):
    """A tree of instrument files: written once (perhaps slowly), then never modified."""

    root: LocalPath = Field(description='Local path, or "ssh://[user@]host[:port]/abs/path".')
    include: list[str] = Field(default_factory=list,
                               description='Globs of files to keep (default all), e.g. "telem/**".')
    exclude: list[str] = Field(default_factory=list, description='Globs of files to skip, e.g. "**/*.tmp".')
    settle: Duration = Field(
        default=timedelta(minutes=2), description="A file is copied once its mtime is at least this old."
    )
    immutable: bool = Field(
        default=False,
        description="Files never change once settled: directories whose mtime did not change are not re-listed.",
    )
    full_scan_every: Duration = Field(
        default=timedelta(days=1), description="With immutable = true, still re-list everything this often."
    )
    scan_jobs: int = Field(
        default=2, ge=1, le=32,
        description="Processes reading a big local origin's directories at once (1: only reconciler itself).",
    )
    trim: TrimConfig | None = Field(
        default=None,
        description='Remove files from this origin once min_copies replicas provably hold them, e.g. '
                    '{ min_copies = 2, older_than = "30d" } (destructive trim actions; needs checksum = "sha256" '
                    "and scrub_every on the replicas that count). Default: never.",
    )
    checksum: Literal["none", "sha256"] = Field(
        default="none",
        description='Content checksums: "sha256" hashes each settled file once (again only when its size or '
                    "mtime changes), hashes every copy where it lies after rsync delivered it, and records the "
                    'copy as verified only when the hashes match (needed by scrub_every). "none" (the default) '
                    "trusts rsync and size/mtime, reading nothing twice.",
    )

    host: str | None = Field(
        default=None,
        description='The computer whose disk holds root, e.g. "exao1" (default: the host of an ssh:// root, else '
                    "whichever host runs reconciler). A run on that host reads root directly; a run on another "
                    "host reads it over ssh://<host><root>, or not at all with local_only = true. Names compare "
                    "without case, a short name matching its full one; $RECONCILER_HOST overrides this host's name.",
    )
    local_only: bool = Field(
        default=False,
        description="Only a run on the origin's own host (host, or the host of an ssh:// root) reads this origin "
                    "and plans its copies; runs on other hosts leave it to that run and say so in their plan.",
    )

    @field_validator("root")
    @classmethod
    def _root_is_a_location(cls, value: str) -> str:
        Location.parse(value)
        return value

    @field_validator("host")
    @classmethod
    def _host_is_a_name(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value.startswith("-") or any(c in value for c in "/@: ")):
            raise ValueError(f"host {value!r} is not a host name; write e.g. \"exao1\" (user and port belong in "
                             "[ssh] or an ssh_config file)")
        return value

    @model_validator(mode="after")
    def _local_only_needs_a_host(self) -> OriginConfig:
        if self.local_only and self.home is None:
            raise ValueError("local_only = true needs the origin's host: set host = \"<name>\" (or an ssh:// root)")
        if self.host is not None and self.root_location.is_remote and self.root_location.host != self.host:
            raise ValueError(f"host = {self.host!r} contradicts the ssh:// root's host "
                             f"{self.root_location.host!r}; give one of them")
        return self

    @property
    def root_location(self) -> Location:
        """``root`` as written (a local path, or an ssh:// URL)."""
        return Location.parse(self.root)

    @property
    def home(self) -> str | None:
        """The host whose disk holds the origin: ``host``, else an ssh:// root's host, else None (any)."""
        return self.host or self.root_location.host

    @property
    def here(self) -> bool:
        """Whether this run is on the origin's own host (always, for an origin with no host)."""
        return self.home is None or is_this_host(self.home)

    @property
    def location(self) -> Location:
        """Where this run reads the origin: its root directly on its own host (an ssh:// root too),
        over ssh from any other host (a local root with ``host``)."""
        written = self.root_location
        if self.home is None:
            return written
        if self.here:
            return Location(written.path)
        return written if written.is_remote else Location(written.path, host=self.home)


class ReplicaConfig(Section):
    """A place that must hold a copy of every file of its origins, laid out <prefix>/<origin>/<path>."""

    local: bool | None = Field(default=None, description="Optional: inferred from the key (ssh:// is remote).")
    origins: list[str] | None = Field(default=None, description="Origins to hold (default: all).")
    import_origins: bool = Field(
        default=False, description="Enrol what the replica already holds under <prefix>/<origin>/ (never copies)."
    )
    verify_every: Duration = Field(
        default=timedelta(days=7),
        description="Re-list the replica this often to catch drift (copies deleted or changed there), and at "
                    "every --full-scan. Between listings a plan trusts the inventory's records of the copies.",
    )
    scan_jobs: int = Field(
        default=2, ge=1, le=32,
        description="Processes reading a big local replica's directories at once when it is verified or enrolled.",
    )
    copy_jobs: int = Field(
        default=2, ge=1, le=32,
        description="rsync processes copying to this replica at once (each takes a batch of files).",
    )
    copy_batch_files: int = Field(
        default=20_000, ge=1, le=1_000_000,
        description="Most files one rsync run copies. Fewer: finer progress and failures; more: fewer rsync runs.",
    )
    bwlimit: Size | None = Field(
        default=None,
        description='Most bytes per second the copies to this replica send in all, e.g. "50MiB" (rsync '
                    "--bwlimit, split evenly among the copy_jobs rsync processes). Default: no limit.",
    )
    removable: bool = Field(
        default=False,
        description="A disk that is sometimes unplugged: an absent root (or an empty mount point without the "
                    "replica's marker file) is reported as offline, not as an error, until stale_after.",
    )
    stale_after: Duration = Field(
        default=timedelta(days=14),
        description="With removable = true: how long the replica may stay offline before it is a warning "
                    "(reconcile exits 2, plan --detailed-exitcode exits 2).",
    )
    scrub_every: Duration | None = Field(
        default=None,
        description='Re-read every copy on this replica at least this often (e.g. "90d") and compare its sha256 '
                    'with the origin\'s; a copy that differs is corrupt and is copied again. Needs checksum = '
                    '"sha256" on its origins.',
    )
    scrub_budget: Size | None = Field(
        default=None,
        description='Most bytes one run re-reads for the scrub, e.g. "200GiB" (the copies verified longest ago '
                    "first). Default: no limit.",
    )

    @field_validator("bwlimit")
    @classmethod
    def _bwlimit_fits_the_jobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        jobs = info.data.get("copy_jobs", 1)  # declared above, so validated first
        if value is not None and value < 1024 * jobs:
            raise ValueError(f"less than 1 KiB/s for each of the copy_jobs = {jobs} rsync processes "
                             "(rsync's smallest limit); raise it or lower copy_jobs")
        return value

    def bwlimit_kib(self) -> int | None:
        """rsync's ``--bwlimit`` for each of the copy_jobs processes, in KiB/s (None: no limit)."""
        return None if self.bwlimit is None else int(self.bwlimit) // 1024 // self.copy_jobs


class SshSection(Section):
    """How reconciler runs ssh for ssh:// origins and replicas."""

    config_file: LocalPath | None = Field(default=None, description="An ssh_config file (ssh -F).")
    identity_file: LocalPath | None = Field(default=None, description="A private key (ssh -i).")
    options: list[str] = Field(default_factory=list,
                               description='Extra "-o" options, e.g. "StrictHostKeyChecking=yes".')
    connect_timeout: Duration = Field(default=timedelta(seconds=10), description="ssh ConnectTimeout.")
    share_connections: bool = Field(
        default=True,
        description="Run all ssh calls of a run to one host over one connection (ssh ControlMaster); "
                    "false: log in anew for each call.",
    )

    def settings(self) -> SshSettings:
        return SshSettings(
            config_file=self.config_file,
            identity_file=self.identity_file,
            options=tuple(self.options),
            connect_timeout=max(1, int(self.connect_timeout.total_seconds())),
            share_connections=self.share_connections,
        )


def replica_location(key: str, base_dir: Path) -> Location:
    """A replica's key as a location; local keys resolve like every path in the config."""
    location = Location.parse(key)
    return location if location.is_remote else Location(resolve_path(location.path, base_dir))


def origins_of(desired: Any, replica: ReplicaConfig) -> list[str]:
    """The origins a replica holds: those it names, else every origin."""
    return list(replica.origins) if replica.origins is not None else list(desired.origins)
