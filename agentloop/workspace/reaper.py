"""Run one command and make sure every process it started is gone when it ends.

agentloop.workspace.checks runs each check as `python -I -S -c "import reaper; reaper.main(ARGV)"`
(unless the sandbox runs it in a PID namespace of its own, which does the same: checks.reaped_by).
A process group alone is not enough: a `setsid` or double-forked grandchild leaves the group and
would outlive a timeout. This wrapper marks itself a child subreaper (prctl), so every orphaned
descendant is re-parented to it rather than to init; when the command exits, or on SIGTERM (the
timeout), it SIGKILLs all of its descendants, found by walking /proc, and reaps them before exiting
with the command's exit code.

Standalone on purpose (standard library only, no agentloop import): it starts in milliseconds.
"""

from __future__ import annotations

import os
import sys
import time

try:  # the C modules: `signal` imports enum and `ctypes` much more; this runs once per check
    import _signal as signal
except ImportError:  # pragma: no cover - other Pythons
    import signal  # type: ignore[no-redef]

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KILL_DEADLINE_S = 0.8  # give up waiting on unkillable (D-state) processes after this


class _Stop(Exception):
    pass


def _prctl(option: int, value: int) -> bool:
    try:
        import _ctypes

        return _ctypes.call_function(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"), (option, value, 0, 0, 0)) == 0
    except (ImportError, OSError, AttributeError, TypeError):
        try:
            import ctypes

            return ctypes.CDLL(None).prctl(option, value, 0, 0, 0) == 0
        except (OSError, AttributeError):
            return False


def descendants(root: int) -> list[int]:
    """Every live process below `root`, from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        try:
            ppid = int(data[data.rfind(b")") + 2 :].split()[1])
        except (IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found: list[int] = []
    stack = [root]
    while stack:
        for pid in children.get(stack.pop(), ()):
            found.append(pid)
            stack.append(pid)
    return found


def kill_all() -> None:
    """SIGKILL every descendant and reap it; loop because a dying fork storm re-parents to us.

    With no child left (the usual end of a check) no process has us as its parent, so no descendant
    can exist or appear: /proc, a file per process on the machine, is then not read."""
    me = os.getpid()
    deadline = time.monotonic() + KILL_DEADLINE_S
    if not _has_children():
        return
    while True:
        for pid in descendants(me):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return  # no child left: as subreaper, that means no descendant left
            if pid == 0:
                break
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)


def _has_children() -> bool:
    """Whether any child (a zombie too) is left, reaping none of them."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _on_signal(signum, frame):
    raise _Stop


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: reaper.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent = os.getppid()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # agentloop killed: take the checks down too
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    code = 137
    try:
        if os.getppid() != parent:  # agentloop died before the death signal was armed
            raise _Stop
        pid = os.fork()
        if pid == 0:
            try:
                # Python ignores SIGPIPE and SIGXFSZ; the command must get the defaults back.
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(sig, signal.SIG_DFL)
                os.execvp(argv[0], argv)
            except BaseException as exc:  # noqa: BLE001 - anything here must end the child
                os.write(2, f"agentloop: cannot run {argv[0]}: {exc}\n".encode())
            os._exit(127)
        while True:
            done, status = os.waitpid(-1, 0)
            if done == pid:
                code = os.waitstatus_to_exitcode(status)
                code = 128 - code if code < 0 else code
                break
    except _Stop:
        pass
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        kill_all()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
