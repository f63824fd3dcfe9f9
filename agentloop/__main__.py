"""The `agentloop` command (and `python -m agentloop`). Ctrl-C works from the first instant: while the
CLI is still being imported (a tenth of a second or more), it ends the command with exit code 130
and one line, not a traceback; nothing has been written yet then."""

import os
import signal


def _interrupted_while_starting(signum, frame) -> None:
    os.write(2, b"agentloop: interrupted\n")
    os._exit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted_while_starting)  # agentloop.cli.main sets its own
    from agentloop.cli import main as run

    run()


if __name__ == "__main__":
    main()
