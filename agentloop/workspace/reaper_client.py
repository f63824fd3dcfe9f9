"""The caller's side of one long-lived reaper (reaper.serve) that runs a process's checks in turn.

agentloop.workspace.checks runs each check under its own reaper.py (a Python start: 11-15 ms of CPU
a check) unless the sandbox's PID namespace does that work. A process that runs many checks, one at a
time, from one thread (agentloop.batch.worker's runners) calls `use_one_reaper()`; its checks then go
to one reaper.py started on its first check, which forks each of them (about a millisecond) and gives
the same guarantees: the check in a session of its own, every process it started killed and reaped
before its exit code comes back (setsid and double-forked ones too: the reaper is a child subreaper),
everything killed when the caller dies (PDEATHSIG) or asks. The reaper starts with an empty
environment (a check, which may read its /proc entry, finds no provider key there); each check's own
environment travels with its request.

When the reaper cannot be started or stops answering, the check runs under a reaper of its own, as
without `use_one_reaper()`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

REAPER_DIR = str(Path(__file__).parent)
REAPER_SERVE = (f"import sys; sys.path.append({REAPER_DIR!r}); import reaper; "
                "sys.exit(reaper.serve(int(sys.argv[1])))")
ANSWER_S = 5.0  # a reaper that has not answered a request or a kill by then is given up on

_wanted = False
_reaper: OneReaper | None = None


def use_one_reaper() -> None:
    """From now on this process's checks (sandbox off) run under one long-lived reaper. Only for a
    process that runs one check at a time, from one thread."""
    global _wanted
    _wanted = True


def one_reaper() -> OneReaper | None:
    """The running reaper (started if need be), or None when not wanted or it cannot start."""
    global _reaper
    if not _wanted:
        return None
    if _reaper is None or not _reaper.alive():
        try:
            _reaper = OneReaper()
        except OSError:
            _reaper = None
    return _reaper


def reaper_pid() -> int | None:
    """The pid of the long-lived reaper, if one runs (a runner sweeping its leftovers spares it)."""
    return _reaper.proc.pid if _reaper is not None and _reaper.alive() else None


class ReaperGone(Exception):
    """The reaper did not answer: the command is run another way (or was killed by its group)."""


class OneReaper:
    """`python -I -S reaper.py serve`, a socket pair's other end, started with an empty environment."""

    def __init__(self) -> None:
        import socket  # (imported here: a `fix` or a hook never needs it)

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", REAPER_SERVE, str(theirs.fileno())],
                                         pass_fds=[theirs.fileno()], env={}, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.sock = ours

    def alive(self) -> bool:
        return self.proc.poll() is None and self.sock.fileno() >= 0

    def start(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None) -> Served:
        """Have the reaper fork and exec `argv`; its output comes on the returned handle's stdout."""
        import socket

        request = json.dumps({"argv": list(argv), "cwd": str(cwd),
                              "env": dict(os.environ if env is None else env)}).encode()
        read, write = os.pipe()
        try:
            socket.send_fds(self.sock, [request], [write])
        except OSError:
            os.close(read)
            self.close()
            raise ReaperGone("the reaper took no request") from None
        finally:
            os.close(write)
        try:
            reply = self.answer(ANSWER_S)
        except ReaperGone:
            reply = None
        if reply is None or "pid" not in reply:
            os.close(read)
            self.close()
            raise ReaperGone("the reaper did not start the command")
        return Served(self, int(reply["pid"]), open(read, "rb"))  # noqa: SIM115 - closed by checks._run

    def answer(self, timeout: float) -> dict | None:
        """The reaper's next message, or None when it said nothing within `timeout`; ReaperGone when
        its end of the socket closed."""
        try:
            if not select.select([self.sock], [], [], timeout)[0]:
                return None
            data = self.sock.recv(1 << 16)
        except (OSError, ValueError):
            raise ReaperGone("the reaper's socket is closed") from None
        if not data:
            raise ReaperGone("the reaper exited")
        return json.loads(data)

    def close(self) -> None:
        """Stop the reaper: the end of its socket makes it kill what runs and exit; killed if it does not."""
        global _reaper
        self.sock.close()
        try:
            self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if _reaper is self:
            _reaper = None


class Served:
    """One command the reaper runs: its output, and its end (as subprocess.Popen is used in checks._run)."""

    def __init__(self, reaper: OneReaper, pid: int, stdout: BinaryIO):
        self.reaper, self.pid, self.stdout = reaper, pid, stdout
        self.code: int | None = None

    def wait(self, timeout: float) -> int | None:
        """Its exit code once it and everything it started are gone; None if not within `timeout`."""
        if self.code is None:
            try:
                reply = self.reaper.answer(timeout)
            except ReaperGone:
                self._gone()
            else:
                if reply is not None:
                    self.code = int(reply["exit"])
        return self.code

    def stop(self) -> int:
        """End it now with everything it started (the timeout, an interruption); its exit code."""
        if self.code is None:
            try:
                self.reaper.sock.send(b'{"kill": true}')
            except OSError:
                pass
            if self.wait(ANSWER_S) is None:
                self._gone()
        assert self.code is not None
        return self.code

    def _gone(self) -> None:
        """The reaper stopped answering (killed, stopped): its command's group is killed and the reaper
        given up (a new one starts at the next check); what escaped the group is left to the caller,
        a child subreaper that sweeps its descendants."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.reaper.close()
        self.code = -signal.SIGKILL
