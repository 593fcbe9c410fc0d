"""MongoDB backups (work in progress): the mongodump-compatible formats and restic's
retention rules. The resource kind itself is not registered yet (this package
defines no ``KIND``), so nothing here is reachable from the config or the CLI."""
