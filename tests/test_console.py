"""The live status line on a terminal, plain lines elsewhere, -v's replies and check output."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from conftest import PYTEST
from fake_llm import FakeLLM

from agentloop.cli import cli
from agentloop.console import ERASE, Console

FIX_ADD = "I will fix add.\n\ncalc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_is_rewritten_in_place_and_erased_before_a_line(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    screen = Terminal()
    console = Console(screen)
    console.status("running check 1/2: pytest")
    console.line("turn 1: done")
    console.close()
    out = screen.getvalue()
    assert "running check 1/2: pytest" in out and "\x1b[36m" in out  # cyan on a terminal
    assert out.index(ERASE) < out.index("turn 1: done")
    assert out.endswith(ERASE) or out.endswith("turn 1: done\n")


def test_no_color_and_pipes_get_plain_lines(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    screen = Terminal()
    Console(screen).line("accepted", fg="green")
    assert screen.getvalue() == "accepted\n"
    pipe = io.StringIO()
    console = Console(pipe)
    console.status("waiting for the model")
    console.line("turn 1: done", fg="red")
    console.close()
    assert pipe.getvalue() == "turn 1: done\n"  # no status text, no escape codes in a log


def test_verbose_shows_the_reply_and_the_check_output(calc_repo, monkeypatch):
    monkeypatch.chdir(calc_repo)
    with FakeLLM([{"content": FIX_ADD}]) as server:
        result = CliRunner().invoke(cli, ["fix", "-v", "-m", "openai/fake", "--api-base", server.api_base,
                                          "--check", PYTEST], catch_exceptions=False)
    assert result.exit_code == 0
    err = result.stderr
    assert "I will fix add." in err  # the model's reply
    assert "1 failed, 1 passed" in err and "2 passed" in err  # pytest's own output, both rounds
    assert "running check 1/1: " in err  # -v in a log: the steps as lines


def read_pty(fd: int, proc: subprocess.Popen, limit_s: float = 120) -> str:
    chunks, end = [], time.monotonic() + limit_s
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_sees_what_is_happening(calc_repo):
    """The real CLI on a pseudo-terminal: the status line says what it waits for, in colour."""
    with FakeLLM([{"content": FIX_ADD, "delay": 4}]) as server:
        leader, follower = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm", "COLUMNS": "200"}
        proc = subprocess.Popen([sys.executable, "-m", "agentloop", "fix", "-m", "openai/fake", "--api-base",
                                 server.api_base, "--check", PYTEST], cwd=calc_repo, stdin=subprocess.DEVNULL,
                                stdout=follower, stderr=follower, env=env)
        os.close(follower)
        try:
            screen = read_pty(leader, proc)
        finally:
            os.close(leader)
            proc.wait(timeout=60)
    assert proc.returncode == 0, screen
    assert "running check 1/1: " in screen
    assert re.search(r"waiting for the model \(turn 1\) [1-9]s", screen)  # elapsed seconds while it waits
    assert ERASE in screen and "\x1b[32m" in screen  # redrawn in place; the outcome in green
    assert "accepted: all acceptance checks pass; after 1 turn" in screen
    assert Path(calc_repo / "calc.py").read_text().count("a + b") == 1
