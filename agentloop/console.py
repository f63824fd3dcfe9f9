"""What `agentloop fix` prints while it works: permanent lines, and on a terminal one live status line.

On a terminal the bottom line says what is happening now (running check 2/3, waiting for the model
for 12s, retry 1, applying edits) and is rewritten in place; elsewhere (a pipe, a CI log, --json)
only the permanent lines are printed, one per event. Colour only on a terminal and never with
NO_COLOR. Fed by the loop's callbacks (progress, status, show_reply, check output); knows nothing
of the loop itself.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import TextIO

from agentloop.commands.style import use_colour

TICK_S = 1.0  # how often the elapsed seconds of a wait are redrawn
ERASE = "\r\x1b[K"


class Console:
    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None, colour: bool | None = None,
                 verbose: bool = False, quiet: bool = False):
        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.live = tty and not quiet if live is None else live
        self.colour = use_colour(self.stream) if colour is None else colour
        self.verbose, self.quiet = verbose, quiet
        self._lock = threading.RLock()
        self._status = ""  # what the live line says, without the elapsed time
        self._since = 0.0
        self._shown = False  # a status line is on screen and must be erased before a permanent line
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self._check_text_open = False

    # -- permanent lines ----------------------------------------------------------------------------
    def line(self, text: str, *, fg: str | None = None, dim: bool = False, bold: bool = False) -> None:
        if self.quiet:
            return
        with self._lock:
            self._erase()
            self.stream.write(self._paint(text, fg=fg, dim=dim, bold=bold) + "\n")
            self.stream.flush()
            self._draw()

    def progress(self, text: str) -> None:
        """A line of the loop's progress: `turn N: ...`, notes."""
        fg = "red" if re.match(r"turn \d+: .*stopped", text) else None
        self.line(text, fg=fg, dim=not text.startswith("turn "))

    def reply(self, text: str) -> None:
        """-v: the model's reply, as it arrives."""
        if self.verbose:
            self.line(text.rstrip(), dim=True)

    def check_output(self, data: bytes) -> None:
        """-v: a check's output as it comes."""
        if not self.verbose or self.quiet:
            return
        with self._lock:
            self._erase()
            self.stream.write(data.decode("utf-8", errors="replace"))
            self._check_text_open = not data.endswith(b"\n")
            self.stream.flush()

    # -- the live status line ----------------------------------------------------------------------
    def status(self, text: str) -> None:
        """What is happening now; an empty text clears the line."""
        with self._lock:
            if self._check_text_open:
                self.stream.write("\n")
                self._check_text_open = False
            if self.verbose and not self.live and text and not text.startswith("waiting"):
                self.stream.write(text + "\n")  # a log gets the steps as lines with -v
            self._status, self._since = text, time.monotonic()
            if self.live:
                self._erase()
                self._draw()
                self._start_ticker()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._status = ""
            self._erase()

    def _start_ticker(self) -> None:
        if self._ticker is None and self.live:
            self._ticker = threading.Thread(target=self._tick, name="agentloop-status", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                if self._status:
                    self._erase()
                    self._draw()

    def _draw(self) -> None:
        if not (self.live and self._status) or self.quiet or self._check_text_open:
            return
        import shutil

        elapsed = time.monotonic() - self._since
        text = self._status + (f" {elapsed:.0f}s" if elapsed >= 1 else "")
        width = shutil.get_terminal_size((80, 24)).columns - 1  # a wrapped line could not be erased
        text = text if len(text) <= width else text[: max(width - 3, 0)] + "..."
        self.stream.write(self._paint(text, fg="cyan"))
        self.stream.flush()
        self._shown = True

    def _erase(self) -> None:
        if self._shown:
            self.stream.write(ERASE)
            self._shown = False

    def _paint(self, text: str, **style) -> str:
        import click

        style = {k: v for k, v in style.items() if v}
        return click.style(text, **style) if self.colour and style else text
