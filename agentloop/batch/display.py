"""What a running batch shows: done/total, pass rate, cost, ETA, and each running rollout.

On a terminal (stdout and stderr both TTYs, TERM not `dumb`) a live block is redrawn in place with
ANSI cursor moves, finished rollouts scrolling above it; otherwise one plain line per finished
rollout, as a log wants. `render` turns the state into lines and is all the layout there is.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from agentloop.batch.rollout import PASSED

REDRAW_S = 0.5  # at most this often on a tick; finishing and starting redraw at once


@dataclass
class Running:
    label: str
    since: float
    attempt: int = 1


@dataclass
class BatchState:
    """What the display knows: counts, cost, and the rollouts running now (by (task id, sample))."""

    total: int
    started: float
    done: int = 0
    passed: int = 0
    cost: float = 0.0
    running: dict[tuple[str, int], Running] = field(default_factory=dict)

    def eta(self, now: float) -> float | None:
        if not self.done:
            return None
        return (now - self.started) / self.done * (self.total - self.done)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def summary(state: BatchState, now: float) -> str:
    """`[done/total] passed P/D (R%) | $cost | ETA t`."""
    rate = f"{100 * state.passed / state.done:.0f}%" if state.done else "-"
    return (f"[{state.done}/{state.total}] passed {state.passed}/{state.done} ({rate}) | ${state.cost:.4f} | "
            f"ETA {_duration(state.eta(now))}")


def finished_line(result: dict[str, Any], state: BatchState, now: float) -> str:
    """The plain line for a finished rollout (after the state counted it)."""
    head = summary(state, now).split("] ", 1)
    return (f"{head[0]}] {result['id']}#{result['sample']} {result['status']} ({float(result['seconds']):.1f}s) | "
            f"{head[1]}")


def render(state: BatchState, now: float, width: int = 80, height: int = 24) -> list[str]:
    """The live block: the summary, then one line per running rollout (longest-running first), each
    cut to the terminal's width, and as many as fit in its height."""
    lines = [summary(state, now) + f" | {len(state.running)} running"]
    rows = sorted(state.running.values(), key=lambda r: r.since)
    room = max(1, height - 2)
    shown = rows if len(rows) <= room else rows[: room - 1]
    for r in shown:
        retry = f"  (attempt {r.attempt})" if r.attempt > 1 else ""
        lines.append(f"  {r.label:<30} {_duration(now - r.since):>7}{retry}")
    if len(shown) < len(rows):
        lines.append(f"  ... and {len(rows) - len(shown)} more")
    return [line[: max(1, width - 1)] for line in lines]


def choose_live(stdout: TextIO | None = None, stderr: TextIO | None = None,
                environ: dict[str, str] | None = None) -> bool:
    """Live only when both stdout and stderr are terminals and the terminal understands ANSI."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    environ = os.environ if environ is None else environ
    try:
        ttys = stdout.isatty() and stderr.isatty()
    except (AttributeError, ValueError):
        return False
    return ttys and environ.get("TERM", "") not in ("", "dumb")


class Display:
    """The batch's progress, live or plain. `started`, `finished` and `tick` are called by the driver."""

    def __init__(self, total: int, *, live: bool, say: Callable[[str], None], stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.state = BatchState(total, clock())
        self.live, self.say, self.clock = live, say, clock
        self.stream = stream or sys.stderr
        self._drawn = 0
        self._last = 0.0

    def started(self, key: tuple[str, int], attempt: int = 1) -> None:
        self.state.running[key] = Running(f"{key[0]}#{key[1]}", self.clock(), attempt)
        self._redraw()

    def finished(self, result: dict[str, Any]) -> None:
        state = self.state
        state.running.pop((result["id"], result["sample"]), None)
        state.done += 1
        state.passed += result["status"] == PASSED
        state.cost += float(result.get("cost") or 0.0)
        line = finished_line(result, state, self.clock())
        if not self.live:
            self.say(line)
            return
        self._erase()
        self.stream.write(line + "\n")
        self._redraw()

    def retrying(self, key: tuple[str, int]) -> None:
        """A rollout ended in an infra error and goes back to the queue: no longer running."""
        self.state.running.pop(key, None)
        self._redraw()

    def tick(self) -> None:
        if self.live and self.clock() - self._last >= REDRAW_S:
            self._redraw()

    def close(self) -> None:
        if self.live:
            self._erase()
            self.stream.flush()

    def _erase(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")  # up to the block's first line, clear below
            self._drawn = 0

    def _redraw(self) -> None:
        if not self.live:
            return
        size = shutil.get_terminal_size()
        lines = render(self.state, self.clock(), size.columns, size.lines)
        self._erase()
        self.stream.write("".join(line + "\n" for line in lines))
        self.stream.flush()
        self._drawn = len(lines)
        self._last = self.clock()
