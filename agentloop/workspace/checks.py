"""Run the project's own commands: in their own process group, with a timeout and capped output.

The exit code of these commands is the only ground truth agentloop trusts.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agentloop.workspace.reaper_client import ReaperGone, one_reaper

# Environment variables a check may see. Everything else is dropped unless `pass_env` names it.
SAFE_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR", "TEMP",
    "TMP", "PWD", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
    "GOPATH", "GOROOT", "GOCACHE", "GOFLAGS", "CARGO_HOME", "RUSTUP_HOME", "JAVA_HOME", "NODE_PATH",
    "NVM_DIR", "PYENV_ROOT", "PYENV_VERSION", "CI", "NO_COLOR", "FORCE_COLOR", "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE",
)
SAFE_ENV_PREFIXES = ("LC_", "XDG_")
SECRET_NAME = re.compile(
    r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|AUTH|_PAT$)", re.I)


def check_env(pass_env: Iterable[str] = (), base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a check: an allowlist of harmless variables plus what the user passes."""
    base = os.environ if base is None else base
    wanted = set(pass_env)
    env = {}
    for name, value in base.items():
        harmless = name in SAFE_ENV or name.startswith(SAFE_ENV_PREFIXES)
        if name in wanted or (harmless and not SECRET_NAME.search(name)):
            env[name] = value
    return env


# What /bin/sh (dash, bash) prints when a command does not exist or cannot be executed.
_CANNOT_START = re.compile(r"^\S*sh: (?:(?:line )?\d+: )?(?P<name>.+?): "
                           r"(?P<why>(?:command )?not found|Permission denied)$", re.M)


def cannot_start(result: CommandResult) -> str | None:
    """Why a check could not even start (exit 126/127, or the shell saying its first word is not
    found), or None: such a check is a usage error, not a failure for the model to fix."""
    if result.passed or result.timed_out:
        return None
    first = (result.command.split() or [""])[0]
    said = [m for m in _CANNOT_START.finditer(result.output) if m.group("name") == first]
    if result.exit_code not in (126, 127) and not said:
        return None
    why = said[0].group("why") if said else "not found" if result.exit_code == 127 else "not executable"
    return f"{first}: {why.replace('command ', '')}, exit code {result.exit_code}"


@dataclass
class CommandResult:
    command: str
    exit_code: int  # -1 when killed by the timeout
    output: str  # stdout and stderr interleaved, capped (head + tail)
    duration_s: float
    timed_out: bool = False
    total_bytes: int = 0
    elided_bytes: int = 0
    grade: dict | None = None  # a pytest check's structured verdict (workspace.grading); None: exit code only
    report: Any = field(default=None, repr=False)  # its per-test report (workspace.grading.Report), not recorded

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and (self.grade is None or bool(self.grade.get("ok")))

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["report"]
        if self.grade is None:
            del data["grade"]
        return data


class _HeadTail:
    """Keep the first and last `cap // 2` bytes of a stream, counting what falls in between."""

    def __init__(self, cap: int):
        self.head_cap = cap // 2
        self.tail_cap = cap - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    @property
    def elided(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        if not self.elided:
            return head + self.tail.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        return f"{head}\n[... {self.elided} bytes elided ...]\n{tail}"


REAPER = Path(__file__).with_name("reaper.py")
# How a check's reaper starts: imported, so that its bytecode comes from __pycache__ (a script given
# by path is compiled from source at every start: some 3 ms of CPU per check); its folder last on
# sys.path, so it shadows no standard module.
REAPER_MAIN = (f"import sys; sys.path.append({str(REAPER.parent)!r}); import reaper; "
               "sys.exit(reaper.main(sys.argv[1:]))")
PR_SET_DUMPABLE = 4


def _set_dumpable(on: bool) -> None:
    """While checks run, agentloop is not "dumpable": then other processes of the same (non-root)
    user cannot read its /proc/<pid>/environ, where the provider keys it was started with live.
    (Root can; the sandbox's PID namespace hides agentloop from checks altogether.)"""
    if sys.platform == "linux":
        from agentloop.workspace.reaper import _prctl

        _prctl(PR_SET_DUMPABLE, int(on))


def reaped_by(wrapper: Sequence[str]) -> bool:
    """Whether the sandbox in `wrapper` already does the reaper's work: bwrap with a PID namespace of
    its own and --die-with-parent. When the command ends, or bwrap is signalled, bwrap's init (pid 1
    there) exits and the kernel kills every process left in the namespace, setsid and double-forked
    ones too; when agentloop dies, so does the sandbox. The reaper's Python start (11-15 ms of CPU a
    check) is then saved. Exit codes are the same: the command's, 128 + N for a signal."""
    return bool(wrapper) and "--unshare-pid" in wrapper and "--die-with-parent" in wrapper


def _end_tree(proc: subprocess.Popen) -> None:
    """Make sure the command and everything it started are gone, within a second.

    SIGTERM asks the reaper to SIGKILL all its descendants (setsid ones included), or ends the
    sandbox, whose PID namespace then dies whole; if it has not exited soon after, its whole process
    group is killed as a fallback.
    """
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=0.9)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the reaper is unreaped until wait(): pid not reused
    except (ProcessLookupError, PermissionError):
        pass


def run_command(
    command: str,
    cwd: Path,
    *,
    timeout: float = 300,
    output_cap: int = 10_000,
    env: Mapping[str, str] | None = None,
    output_sink: Callable[[bytes], None] | None = None,
    wrapper: Sequence[str] = (),
) -> CommandResult:
    """Run `command` through the shell in its own session; never hangs past `timeout`.

    Output is read as it comes (so a chatty child never blocks on a full pipe) and only the head
    and tail are kept, so memory stays bounded whatever the command prints. `output_sink`, if
    given, receives every chunk as it is read (the trajectory streams the output to a file).
    `wrapper` is put before `/bin/sh -c command` (the sandbox's bwrap arguments). Every descendant
    of the command dies when it ends, even ones that left the group: it runs under reaper.py (its
    own, or the process's one long-lived reaper: reaper_client), or in a sandbox with a PID
    namespace of its own, which does the same (see `reaped_by`).
    """
    start = time.monotonic()
    argv = [*wrapper, "/bin/sh", "-c", command]
    _set_dumpable(False)
    try:
        return _run(_start(argv, cwd, env, reaped_by(wrapper)), command, timeout, output_cap, output_sink, start)
    finally:
        _set_dumpable(True)


class _Started(Protocol):
    """A running check as _run sees it: subprocess.Popen under reaper.py, or reaper_client.Served."""

    stdout: Any

    def wait(self, timeout: float) -> int | None: ...

    def stop(self) -> int: ...


class _Popened:
    """A check started by subprocess.Popen: under reaper.py of its own, or in a sandbox that reaps."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.stdout = proc, proc.stdout

    def wait(self, timeout: float) -> int | None:
        # The reaper (or bwrap) holds the pipe: its end is the end of the command and of the
        # stragglers the reaper killed (`sleep &`, setsid ones); _end_tree is then a safety net.
        return self.stop()

    def stop(self) -> int:
        _end_tree(self.proc)
        return self.proc.wait()


def _start(argv: list[str], cwd: Path, env: Mapping[str, str] | None, reaped: bool) -> _Started:
    """The check started: by the process's one long-lived reaper if it uses one (reaper_client), else
    under a reaper of its own (a Python start), or as it is when the sandbox reaps."""
    if not reaped and (reaper := one_reaper()) is not None:
        try:
            return reaper.start(argv, cwd, env)
        except ReaperGone:
            pass  # the reaper is given up: this check gets its own
    reaper_argv = [] if reaped else [sys.executable, "-I", "-S", "-c", REAPER_MAIN]
    return _Popened(subprocess.Popen(
        [*reaper_argv, *argv],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    ))


def _run(proc: _Started, command: str, timeout: float, output_cap: int,
         output_sink: Callable[[bytes], None] | None, start: float) -> CommandResult:
    kept = _HeadTail(output_cap)
    timed_out, exit_code = False, None
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            while True:
                remaining = timeout - (time.monotonic() - start)
                if remaining <= 0:
                    timed_out = True
                    break
                if not sel.select(timeout=min(remaining, 0.5)):
                    continue
                chunk = proc.stdout.read(65536)
                if not chunk:  # EOF: every writer (grandchildren too) closed the pipe
                    exit_code = proc.wait(max(0.0, timeout - (time.monotonic() - start)))
                    timed_out = exit_code is None  # (it closed its output but ran on)
                    break
                kept.feed(chunk)
                if output_sink is not None:
                    output_sink(chunk)
        finally:
            # On timeout or interruption: end the whole tree.
            if exit_code is None:
                exit_code = proc.stop()
            proc.stdout.close()
    if timed_out:
        exit_code = -1
    return CommandResult(
        command=command,
        exit_code=exit_code,
        output=kept.text(),
        duration_s=round(time.monotonic() - start, 3),
        timed_out=timed_out,
        total_bytes=kept.total,
        elided_bytes=kept.elided,
    )


def run_suite(checks: Sequence[Any], run_one: Callable[[Any, int, int], CommandResult]) -> list[CommandResult]:
    """The check suite in the order `fix` and the hook both keep: feedback checks first, then the
    acceptance-only (hidden) ones, which run only once every visible acceptance check passed (they
    cannot be accepted this turn otherwise: the time is saved). `run_one(check, number, count)`."""
    results: list[CommandResult] = []
    visible_ok = True
    ordered = sorted(checks, key=lambda c: not c.feedback)
    for number, check in enumerate(ordered, 1):
        if not check.feedback and not visible_ok:
            continue
        result = run_one(check, number, len(ordered))
        results.append(result)
        if check.feedback and check.accept and not result.passed:
            visible_ok = False
    return results
