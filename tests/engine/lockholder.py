"""A real process that holds a state database's lock for as long as a test wants.

``python -m tests.engine.lockholder STATE_URL OPERATION [--fork]`` takes the apply lock,
prints ``locked LOCK_ID`` (and, with ``--fork``, ``child PID`` of a forked child that
outlives it, as the replica walker's workers may), then blocks reading stdin. The test
reads that line (no timing window), and ends it by closing stdin (a clean release) or by
``kill -9``.
"""

from __future__ import annotations

import os
import sys

from reconciler.state import lock
from reconciler.state.store import StateStore


def main(argv: list[str]) -> int:
    url, operation = argv[0], argv[1]
    store = StateStore(url)
    with lock.held(store, operation) as held:
        print(f"locked {held.lock_id}", flush=True)
        if "--fork" in argv:
            child = os.fork()
            if child == 0:  # blocks on the same stdin until the test closes it or kills it
                sys.stdin.readline()
                os._exit(0)
            print(f"child {child}", flush=True)
        sys.stdin.readline()
    store.dispose()
    print("released", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
