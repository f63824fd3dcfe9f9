"""The driver's handle on one warm worker (`python -m agentloop.batch.worker --serve`).

Used by the local backend (one per worker slot) and by the Ray backend (one per Ray worker
process). It sends a job, reads the worker's events without blocking, and kills: a rollout past its
deadline takes its worker with it (the rollout's process group and the worker's), and the caller
starts a fresh one, so nothing a stuck rollout did can stall the next.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class WorkerDied(Exception):
    """The warm worker's pipe closed: it crashed, was killed, or could not start."""


class WarmWorker:
    """One long-lived worker process, the leader of its own session; one rollout at a time."""

    def __init__(self, log: Path | None = None, preexec_fn: Callable[[], None] | None = None):
        err = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "agentloop.batch.worker", "--serve"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         preexec_fn=preexec_fn, start_new_session=preexec_fn is None)
        finally:
            if log is not None:
                err.close()
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._buffer = b""
        self.ready = False
        self.rollout_pid: int | None = None  # the running rollout's process group, once the worker said
        self.exit_code: int | None = None     # the last rollout's exit status, once it ended
        self.log = log

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def send(self, job: dict[str, Any]) -> None:
        """Hand over a job (the worker may still be importing: the pipe holds it)."""
        assert self.proc.stdin is not None
        self.rollout_pid = self.exit_code = None
        try:
            self.proc.stdin.write(json.dumps(job).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied("the worker's pipe is closed") from None

    def pump(self) -> bool:
        """Read what the worker said; True when the current rollout has ended. WorkerDied at EOF."""
        ended = False
        while True:
            try:
                chunk = os.read(self.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                raise WorkerDied(self._last_log_line())
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            event = json.loads(line)
            if "ready" in event:
                self.ready = True
            elif "started" in event:
                self.rollout_pid = int(event["started"])
            elif "ended" in event:
                self.exit_code = int(event["code"])
                ended = True
        return ended

    def wait_ended(self, deadline: float) -> bool:
        """Block until the current rollout ends (True) or `deadline` (monotonic) passes (False)."""
        while True:
            if self.pump():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            select.select([self], [], [], min(remaining, 1.0))

    def kill(self) -> None:
        """The running rollout's process group, then the worker's own; reaped."""
        try:
            self.pump()  # a rollout that started since we last looked
        except (WorkerDied, ValueError):
            pass
        for group in (self.rollout_pid, self.proc.pid):
            if group is not None:
                try:
                    os.killpg(group, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self._close()

    def close(self) -> None:
        """Ask an idle worker to exit (end of its input), and reap it."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._close()

    def _close(self) -> None:
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass

    def _last_log_line(self) -> str:
        code = self.proc.poll()
        tail = ""
        if self.log is not None:
            try:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1]
            except (OSError, IndexError):
                pass
        return f"the worker exited ({code})" + (f": {tail}" if tail else "")
