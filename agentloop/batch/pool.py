"""The driver's handle on a warm fork server (`python -m agentloop.batch.worker --serve`).

Used by the local backend (one server for all worker slots: litellm is imported once per batch) and
by the Ray backend (one per Ray worker process). It hands jobs over, reads the server's events
without blocking, and kills: a rollout past its deadline loses its whole process group while the
others go on; if the server itself dies, every rollout it ran is reported, and the caller starts
another server.
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
    """The fork server's pipe closed: it crashed, was killed, or could not start."""


class ForkServer:
    """One long-lived server process, the leader of its own session; rollouts are its children."""

    def __init__(self, log: Path | None = None, preexec_fn: Callable[[], None] | None = None):
        err = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "agentloop.batch.worker", "--serve"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         preexec_fn=preexec_fn, start_new_session=preexec_fn is None)
        finally:
            if log is not None:
                err.close()
        os.set_blocking(self.fileno(), False)
        self.log = log
        self.ready = False
        self.pids: dict[str, int] = {}    # running rollouts by name: their runners' process groups
        self._ended: dict[str, int] = {}  # ends read while waiting on a kill, for the next pump()
        self._buffer = b""

    def fileno(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def send(self, name: str, job: dict[str, Any]) -> None:
        """Hand over a job (the server may still be importing: the pipe holds it)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"name": name, "job": job}).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(self._why()) from None

    def pump(self) -> dict[str, int]:
        """Read what the server said; the rollouts that ended since, by name, with their exit codes.
        WorkerDied when the server is gone."""
        ended: dict[str, int] = {}
        while True:
            try:
                chunk = os.read(self.fileno(), 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                raise WorkerDied(self._why())
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not the protocol's (the server sends only JSON lines)
            if "ready" in event:
                self.ready = True
            elif "started" in event:
                self.pids[event["name"]] = int(event["started"])
            elif "ended" in event:
                self.pids.pop(event["name"], None)
                ended[event["name"]] = int(event["code"])
        ended, self._ended = {**self._ended, **ended}, {}
        return ended

    def wait_for(self, name: str, deadline: float) -> int | None:
        """Block until rollout `name` ends (its exit code) or `deadline` (monotonic) passes (None)."""
        while True:
            ended = self.pump()
            if name in ended:
                return ended[name]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            select.select([self], [], [], min(remaining, 1.0))

    def kill_rollout(self, name: str, within: float = 5.0) -> bool:
        """Have the server kill a rollout's whole process group (or drop it if it has not started), and
        wait, `within` seconds at most, until it says the rollout ended: then nothing of it runs on
        while the caller cleans up. Asked of the server, which alone knows whether the runner that
        ran `name` has moved on to another job. Other rollouts' ends are kept for the next pump().
        True once the server said it ended; False if it did not in time, or the server is gone."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"kill": name}).encode() + b"\n")
            self.proc.stdin.flush()
            deadline = time.monotonic() + within
            while True:
                ended = self.pump()  # (first: pump() replaces self._ended)
                self._ended.update(ended)
                if name in self._ended or time.monotonic() >= deadline:
                    return self._ended.pop(name, None) is not None
                select.select([self], [], [], max(0.0, deadline - time.monotonic()))
        except (BrokenPipeError, OSError, WorkerDied):
            return False  # the server is gone: the next pump() says so

    def kill(self) -> None:
        """Every running rollout's process group, then the server's own; reaped."""
        try:
            self.pump()  # rollouts that started since we last looked
        except (WorkerDied, ValueError):
            pass
        rollouts = list(self.pids.values())
        for group in [*rollouts, self.proc.pid]:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self._close()
        deadline = time.monotonic() + 1.0  # the rollouts, orphaned now, are gone before anyone cleans up
        while any(Path(f"/proc/{pid}").exists() for pid in rollouts) and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        """Ask an idle server to exit (end of its input), and reap it."""
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

    def _why(self) -> str:
        code = self.proc.poll()
        tail = ""
        if self.log is not None:
            try:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1]
            except (OSError, IndexError):
                pass
        return f"the worker server exited ({code})" + (f": {tail}" if tail else "")
