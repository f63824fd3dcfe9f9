"""`python tests/slow_apply.py ARGS...`: agentloop's CLI with every file put in place on write-back slowed
by SLOW_APPLY_DELAY seconds, so the kill tests (tests/interrupt_scenarios.py) can land a signal mid-apply.

The delay is injected here, from outside, so production code knows nothing of tests.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    delay = float(os.environ.get("SLOW_APPLY_DELAY") or 0)
    if delay:
        from agentloop.workspace import isolation

        put_in_place = isolation.commit_entry

        def slow_commit_entry(*args, **kwargs):
            put_in_place(*args, **kwargs)
            time.sleep(delay)

        isolation.commit_entry = slow_commit_entry
    from agentloop.cli import main as cli_main

    sys.argv[0] = "agentloop"
    cli_main()


if __name__ == "__main__":
    main()
