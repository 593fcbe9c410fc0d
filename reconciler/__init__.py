"""reconciler: keep research data where its owners declared it should be.

The flow of one run is a straight line::

    config (TOML) --load/validate--> Desired   (reconciler.config)
    world --observe--> Observed               (each kind's observer)
    (Desired, Observed) --diff--> Plan        (each kind's pure diff, reconciler.engine.planner)
    Plan --render--> text / markdown / json   (reconciler.render)
    Plan --apply--> executors + journal       (reconciler.engine.executor)
"""

__version__ = "0.1.0"
