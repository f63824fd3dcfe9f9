"""Run one command and make sure every process it started is gone when it ends.

agentloop.workspace.checks runs each check as `python -I -S -c "import reaper; reaper.main(ARGV)"`
(unless the sandbox runs it in a PID namespace of its own, which does the same: checks.reaped_by),
or, in a batch runner, hands it to one long-lived `reaper.serve(FD)` (see serve and reaper_client).
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


def kill_all(spare: int | None = None) -> None:
    """SIGKILL every descendant (but `spare`, a child, itself) and reap it; loop because a dying
    fork storm re-parents to us.

    With no child left (the usual end of a check) no process has us as its parent, so no descendant
    can exist or appear: /proc, a file per process on the machine, is then not read."""
    me = os.getpid()
    deadline = time.monotonic() + KILL_DEADLINE_S
    if not _has_children():
        return
    while True:
        victims = [pid for pid in descendants(me) if pid != spare]
        for pid in victims:
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
        if not victims or time.monotonic() > deadline:
            return  # (with `spare` alive, no other descendant was left: none can appear)
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
    code = 137
    try:
        if not _become_reaper():
            raise _Stop
        pid = os.fork()
        if pid == 0:
            _exec(argv)
        while True:
            done, status = os.waitpid(-1, 0)
            if done == pid:
                code = _exit_code(status)
                break
    except _Stop:
        pass
    finally:
        _end_all()
    return code


def _become_reaper() -> bool:
    """Mark this process the reaper of all it starts, taking them down when the caller dies (its
    death signal) or asks (SIGTERM); False if the caller died before the death signal was armed."""
    parent = os.getppid()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # agentloop killed: take the checks down too
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    return os.getppid() == parent


def _end_all() -> None:
    """The reaper's end: no more signals taken, every descendant killed and reaped."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    kill_all()


def _exec(argv: list[str], env: dict[str, str] | None = None, redirect: tuple[str, int] | None = None) -> None:
    """In the forked child: the command (in `redirect`'s (cwd, output) if given: serve's commands),
    with the default signal handlers (Python ignores SIGPIPE and SIGXFSZ; the command must get the
    defaults back); never returns."""
    try:
        if redirect is not None:
            _redirect(*redirect)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        if env is None:
            os.execvp(argv[0], argv)
        os.execvpe(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 - anything here must end the child
        os.write(2, f"agentloop: cannot run {argv[0]}: {exc}\n".encode())
    os._exit(127)


def _exit_code(status: int) -> int:
    """A wait status as a shell gives it: the exit code, or 128 + N for signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def serve(sock_fd: int) -> int:
    """The long-lived form, `reaper.serve(FD)`: the commands of one caller, one at a time, each
    ended as main() ends its one (every descendant killed and reaped before the exit code is
    sent), which saves a Python start per command.

    FD is a SOCK_SEQPACKET socket. A request is `{"argv": [...], "cwd": ..., "env": {...}}` with
    the file descriptor for the command's output (stdout and stderr) attached; the reply is
    `{"pid": N}` once it started, then `{"exit": CODE}` once it and all it started are gone. While a
    command runs, `{"kill": true}` ends it now (CODE 137). The end of the socket, SIGTERM, or the
    caller's death (PDEATHSIG) kills whatever runs and ends the reaper.
    """
    import json
    import select
    import socket

    sock = socket.socket(fileno=sock_fd)
    try:
        if not _become_reaper():
            raise _Stop
        while True:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
            if not data:
                break  # the caller closed its end
            request = json.loads(data)
            if "argv" not in request or not fds:  # a late kill, for a command that already ended
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:
                _exec(request["argv"], request["env"], (request["cwd"], fds[0]))
            os.close(fds[0])
            sock.send(json.dumps({"pid": pid}).encode())
            code = _wait_or_kill(sock, pid, select)
            kill_all()
            sock.send(json.dumps({"exit": code}).encode())
    except (_Stop, OSError):
        pass
    finally:
        _end_all()
    return 0


def _redirect(cwd: str, out: int) -> None:
    """In serve's forked child, before the command: a session of its own, no input, its output to
    `out`, working in `cwd` (what subprocess.Popen does for main's command)."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    if out > 2:
        os.close(out)  # (received inheritable: the command would hold a second copy of its output)
    os.chdir(cwd)


def _wait_or_kill(sock, pid: int, select) -> int:
    """The command's exit code (128 + N for signal N) once it exits, or 137 when the caller says kill
    (kill_all, after, ends it); _Stop when the caller is gone."""
    pidfd = os.pidfd_open(pid)
    try:
        if pidfd in select.select([sock, pidfd], [], [])[0]:
            return _exit_code(os.waitpid(pid, 0)[1])
        if not sock.recv(1 << 16):
            raise _Stop
        return 137  # (the only other message is a kill)
    finally:
        os.close(pidfd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
