"""Ctrl-C and SIGTERM during a run: interrupt the work once, never the clean-up.

The first SIGINT or SIGTERM raises KeyboardInterrupt (so a model call or a check stops at once);
after that, and at any time once the run has begun to finish (`settle`), signals are only noted. So
the steps that put the user's tree in order and write the trajectory's footer are never cut in half
by a second Ctrl-C. SIGKILL cannot be caught: the next run repairs what it leaves (see isolation.py).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


class SignalGuard:
    """Installed for the length of one run (main thread only; elsewhere it does nothing)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.armed = False
        self.received: int | None = None  # the last signal seen, raised or noted
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread() and sys.platform != "win32":
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            self.armed = True
        return self

    def __exit__(self, *exc) -> None:
        self.armed = False
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self.armed:
            self.armed = False  # one interrupt per run: the clean-up that follows runs to its end
            raise KeyboardInterrupt

    def settle(self) -> None:
        """From now on signals are noted, not raised: the run is finishing."""
        self.armed = False


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler outside a run: behave like Ctrl-C (exit 130, no traceback)."""
    raise KeyboardInterrupt
