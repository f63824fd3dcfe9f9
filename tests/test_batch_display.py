"""The batch's progress display: the layout as a function of the state, the live/plain choice, and
what each mode writes."""

from __future__ import annotations

import io

from agentloop.batch.display import BatchState, Display, Running, choose_live, finished_line, render, summary


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def state_with(running: int = 2) -> BatchState:
    state = BatchState(total=10, started=0.0, done=4, passed=3, cost=0.0125)
    for i in range(running):
        state.running[(f"task-{i}", i % 2)] = Running(f"task-{i}#{i % 2}", since=10.0 * i, attempt=1 + (i == 1))
    return state


def test_summary_counts_rate_cost_and_eta():
    state = state_with()
    # 40 s for 4 done: 6 to go at 10 s each.
    assert summary(state, 40.0) == "[4/10] passed 3/4 (75%) | $0.0125 | ETA 1m00s"
    empty = BatchState(total=3, started=0.0)
    assert summary(empty, 5.0) == "[0/3] passed 0/0 (-) | $0.0000 | ETA ?"


def test_render_one_line_per_running_rollout_longest_first():
    lines = render(state_with(3), now=50.0, width=120)
    assert lines[0].startswith("[4/10] passed 3/4 (75%)") and lines[0].endswith("| 3 running")
    assert [line.split()[0] for line in lines[1:]] == ["task-0#0", "task-1#1", "task-2#0"]
    assert lines[1].split()[1] == "50s" and lines[3].split()[1] == "30s"
    assert "(attempt 2)" in lines[2] and "attempt" not in lines[1]


def test_render_fits_the_terminal():
    lines = render(state_with(30), now=50.0, width=20, height=8)
    assert len(lines) <= 8 - 1 and all(len(line) <= 19 for line in lines)
    wide = render(state_with(30), now=50.0, width=200, height=8)
    assert wide[-1].strip() == "... and 25 more"
    assert len(wide) == 1 + 5 + 1


def test_finished_line_names_the_rollout_and_its_status():
    state = state_with()
    line = finished_line({"id": "calc-1", "sample": 1, "status": "failed", "seconds": 12.34}, state, 40.0)
    assert line == "[4/10] calc-1#1 failed (12.3s) | passed 3/4 (75%) | $0.0125 | ETA 1m00s"


def test_live_only_when_stdout_and_stderr_are_terminals():
    term = {"TERM": "xterm-256color"}
    assert choose_live(Stream(True), Stream(True), term)
    assert not choose_live(Stream(False), Stream(True), term)   # agentloop batch ... > log
    assert not choose_live(Stream(True), Stream(False), term)   # agentloop batch ... 2> log
    assert not choose_live(Stream(True), Stream(True), {"TERM": "dumb"})
    assert not choose_live(Stream(True), Stream(True), {})
    assert not choose_live(object(), Stream(True), term)  # a replaced sys.stdout without isatty


def test_plain_mode_says_one_line_per_finished_rollout_and_draws_nothing():
    said: list[str] = []
    stream, clock = Stream(False), Clock()
    display = Display(2, live=False, say=said.append, stream=stream, clock=clock)
    display.started(("a", 0))
    display.tick()
    clock.now += 4
    display.finished({"id": "a", "sample": 0, "status": "passed", "seconds": 4.0, "cost": 0.5})
    display.close()
    assert said == ["[1/2] a#0 passed (4.0s) | passed 1/1 (100%) | $0.5000 | ETA 4s"]
    assert stream.getvalue() == ""


def test_live_mode_redraws_the_block_in_place():
    stream, clock = Stream(True), Clock()
    said: list[str] = []
    display = Display(2, live=True, say=said.append, stream=stream, clock=clock)
    display.started(("a", 0))
    display.started(("b", 0))
    first = stream.getvalue()
    assert "a#0" in first and "b#0" in first and "\x1b[" in first  # drawn, the second time over the first
    assert first.count("\x1b[2F\x1b[J") == 1
    clock.now += 3
    stream.seek(0)
    stream.truncate()
    display.finished({"id": "a", "sample": 0, "status": "failed", "seconds": 3.0})
    out = stream.getvalue()
    # The 3-line block (summary, a#0, b#0) erased, the finished line printed, the block drawn again.
    assert out.startswith("\x1b[3F\x1b[J[1/2] a#0 failed (3.0s)")
    assert out.rstrip("\n").splitlines()[-1].strip().startswith("b#0")
    assert said == []
    stream.seek(0)
    stream.truncate()
    clock.now += 0.1
    display.tick()  # too soon: nothing
    assert stream.getvalue() == ""
    clock.now += 1
    display.tick()
    assert stream.getvalue().startswith("\x1b[2F\x1b[J")
    display.close()
    assert stream.getvalue().endswith("\x1b[2F\x1b[J")
