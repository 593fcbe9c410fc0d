"""Telling the outside world how each run went: Prometheus metrics for node_exporter's textfile
collector, healthchecks.io-style pings, a command run on failure (``[monitoring]``).

``run.py`` holds what a run leaves behind (``RunSummary``), ``metrics.py`` renders and writes
the textfile, ``notify.py`` pings and runs the failure command. The CLI calls ``finish`` once
per plan/apply/reconcile, whatever the outcome; nothing here ever fails the run itself.
"""
