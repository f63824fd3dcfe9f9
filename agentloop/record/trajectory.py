"""The record of a run: one JSON object per line, appended and flushed as events happen.

A crash leaves a valid prefix; `read_events` accepts a truncated last line. Everything passes
through the Redactor first, so no key reaches disk. The format is documented in
docs/trajectory.md and described by agentloop/record/schema/trajectory.schema.json.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentloop.files import atomic_write
from agentloop.record.redact import Redactor

SCHEMA_VERSION = "2"  # bump on any change a reader must know about; see docs/trajectory.md
TRAJECTORY = "trajectory.jsonl"
SUMMARY = "summary.json"
INDEX = "index.jsonl"  # in the runs directory: one listing row per finished run, so listing reads one file
INDEX_FIELDS = ("run_id", "started", "outcome", "reason", "task", "model", "turns", "tokens", "cost_usd",
                "duration_s", "reward", "flags", "run_dir")
CHECK_LOGS = "checks"  # full check output, one file per check run: checks/<n>.log
MAX_LINE_BUFFER = 1 << 20  # a "line" longer than this is redacted and written in pieces
CHECK_LOG_CAP = 4 << 20  # bytes of one check's output kept in its log (head + tail halves)


def new_run_id() -> str:
    """`YYYYMMDD-HHMMSS-mmmrrr`: the milliseconds (3 hex digits) keep ids of runs started in the same
    second in start order when sorted by name, which is how "newest" is decided; 3 random hex follow."""
    now = time.time()
    millis = int(now % 1 * 1000)
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{millis:03x}" + secrets.token_hex(2)[:3]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Trajectory:
    """Append-only writer for one run's directory."""

    def __init__(self, run_dir: Path, redactor: Redactor | None = None):
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / TRAJECTORY
        self.redactor = redactor or Redactor()
        self._file = open(self.path, "a", encoding="utf-8")
        self._seq = 0
        self._sent: list[str] = []  # the previous model call's messages, serialised (see conversation_delta)
        self._check_logs = 0

    def event(self, type_: str, **data: Any) -> None:
        self._seq += 1
        record = {"type": type_, "seq": self._seq, "time": now_iso(), **data}
        line = json.dumps(self.redactor.data(record), ensure_ascii=False, default=str)
        self._file.write(line + "\n")
        self._file.flush()

    def conversation_delta(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """`messages_base` + `messages_new` for a model_call event, instead of the whole list.

        Recording every call's full conversation grows as O(n^2); readers rebuild the exact list
        sent as previous[:messages_base] + messages_new (see agentloop.record.runlog.conversations).
        """
        current = [json.dumps(m, sort_keys=True, default=str) for m in messages]
        base = 0
        for old, new in zip(self._sent, current, strict=False):
            if old != new:
                break
            base += 1
        self._sent = current
        return {"messages_base": base, "messages_new": messages[base:]}

    def check_log(self) -> CheckLog:
        """A new side file for one check's full output; the event records its relative name."""
        self._check_logs += 1
        return CheckLog(self.run_dir, f"{CHECK_LOGS}/{self._check_logs:04d}.log", self.redactor)

    def write_text(self, name: str, text: str) -> Path:
        target = self.run_dir / name
        atomic_write(target, self.redactor.text(text))
        return target

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


class CheckLog:
    """Streams a check's output to disk, redacted line by line as it arrives, capped at `cap` bytes.

    Redacting whole lines (not raw chunks) means a secret split across two reads is still masked.
    A check that prints a gigabyte must not fill the disk: the first `cap // 2` bytes are written
    as they come, the last `cap // 2` are held in memory and written on close, after a line saying
    how many bytes were left out between them.
    """

    def __init__(self, run_dir: Path, name: str, redactor: Redactor, cap: int = CHECK_LOG_CAP):
        self.name = name
        self.path = run_dir / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._redactor = redactor
        self._stream = redactor.stream()
        self._file = open(self.path, "w", encoding="utf-8")
        self._pending = bytearray()
        self._head_left = cap // 2
        self._tail_cap = cap - cap // 2
        self._tail = bytearray()
        self.total = 0
        self.elided = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self._head_left <= 0:
            self._feed_tail(chunk)
            return
        self._pending += chunk
        cut = self._pending.rfind(b"\n") + 1
        if not cut and len(self._pending) > MAX_LINE_BUFFER:
            cut = len(self._pending)
        if cut:
            data = bytes(self._pending[:cut])
            del self._pending[:cut]
            if len(data) <= self._head_left:
                self._write(data)
                self._head_left -= len(data)
                return
            keep = data.rfind(b"\n", 0, self._head_left) + 1 or self._head_left  # end at a line end
            self._write(data[:keep])
            self._head_left = 0
            self._feed_tail(data[keep:] + bytes(self._pending))
            self._pending.clear()

    def _feed_tail(self, chunk: bytes) -> None:
        self._tail += chunk
        excess = len(self._tail) - self._tail_cap
        if excess > 0:
            del self._tail[:excess]
            self.elided += excess

    def _write(self, data: bytes) -> None:
        self._file.write(self._stream(data.decode("utf-8", "replace")))

    def close(self) -> None:
        if not self._file.closed:
            if self._pending:
                self._write(bytes(self._pending))
                self._pending.clear()
            if self._tail:
                tail = bytes(self._tail)
                if self.elided:
                    start = tail.find(b"\n") + 1  # resume at a line start, so no secret is cut in half
                    self.elided += start
                    tail = tail[start:]
                    self._file.write(f"\n[... {self.elided} bytes not kept in this log ...]\n")
                self._file.write(self._redactor.text(tail.decode("utf-8", "replace")))
            self._file.close()


def append_index(runs_dir: Path, summary: dict[str, Any], redactor: Redactor | None = None) -> None:
    """Add a finished run's listing row to the runs directory's index, in one O_APPEND write, so
    concurrent runs never interleave their lines."""
    row = {key: summary.get(key) for key in INDEX_FIELDS}
    line = json.dumps((redactor or Redactor()).data(row), ensure_ascii=False, default=str) + "\n"
    fd = os.open(runs_dir / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)



def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete event of a trajectory; a truncated or corrupt line (a crash mid-write) is skipped."""
    events = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):  # anything else is not an event: skip it like a torn line
                events.append(event)
    return events
