"""The read-only tools the model may call, defined as data in `tools/`, answered here.

The model reads; only the driver runs commands. None of these tools can write, run anything or
see git history: `.git` (and symlinks into it or out of the repository) and agentloop's own run
records are refused, and with no shell the model cannot run `git log --all` to peek at later commits.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import select
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agentloop.data import data_dir
from agentloop.files import looks_binary, names_git_dir, read_regular_file, real_inside, text_lines
from agentloop.run.model import ToolCall
from agentloop.workspace.repo import AGENTLOOP_DIR

MAX_READ_LINES = 400
MAX_LIST = 500
MAX_MATCHES = 100
SEARCH_SECONDS = 10.0  # a search past this is stopped (a runaway pattern)
MAX_FILE_BYTES = 4 << 20  # a bigger file is not read whole (a log, a data dump): read_file says so, search skips it
GIVE_UP = "give_up"


@cache
def load_tool_specs() -> tuple[dict[str, Any], ...]:
    """Tool definitions from `tools/*.yaml`, in OpenAI function-calling format."""
    import yaml

    specs = []
    for path in sorted(data_dir("tools").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        specs.append({"type": "function", "function": spec})
    return tuple(specs)


def tool_specs_hash() -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted(data_dir("tools").glob("*.yaml"))}


@dataclass
class ToolAnswer:
    call: ToolCall
    output: str
    ok: bool = True

    def message(self) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": self.call.id, "content": self.output}


class Toolbox:
    """Answers tool calls against one directory tree (the workspace)."""

    def __init__(self, root: Path, list_files, private: frozenset[str] = frozenset()):
        self.root = root.resolve()
        self._list_files = list_files  # callable returning repo-relative paths
        # Files the user never shared (not tracked, not staged): answered as if they did not exist.
        self.private = private

    def _resolve(self, rel: str) -> Path:
        rel = (rel or ".").strip()
        candidate = (self.root / rel).resolve()
        inside = real_inside(self.root, candidate)
        if inside is None:
            raise ValueError(f"{rel}: outside the repository")
        if self.private and inside.as_posix() in self.private:
            raise ValueError(f"{rel}: no such file")
        parts = inside.parts
        if names_git_dir(parts):
            raise ValueError(f"{rel}: git internals are not readable")
        if parts[:1] == (AGENTLOOP_DIR,):
            raise ValueError(f"{rel}: agentloop's run records are not readable")
        return candidate

    def answer(self, call: ToolCall) -> ToolAnswer:
        args = call.parsed_arguments()
        handler = getattr(self, f"_tool_{call.name}", None)
        if handler is None or call.name == GIVE_UP:
            known = ", ".join(s["function"]["name"] for s in load_tool_specs())
            return ToolAnswer(call, f"error: unknown tool {call.name!r}; tools: {known}", ok=False)
        try:
            return ToolAnswer(call, handler(**args))
        except TypeError:
            return ToolAnswer(call, f"error: wrong arguments for {call.name}: {call.arguments}", ok=False)
        except (ValueError, OSError, re.error) as exc:
            return ToolAnswer(call, f"error: {exc}", ok=False)

    def _tool_read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> str:
        target = self._resolve(path)
        if not target.is_file():
            raise ValueError(f"{path}: no such file")
        data = read_regular_file(target, MAX_FILE_BYTES)
        if data is None:  # a FIFO or device would block the read; a huge file would fill the prompt
            raise ValueError(f"{path}: not a regular file of at most {MAX_FILE_BYTES >> 20} MB; use search on it")
        if looks_binary(data):
            raise ValueError(f"{path}: binary file")
        lines = text_lines(data)
        start = max(1, int(start_line or 1))
        end = min(len(lines), int(end_line or start + MAX_READ_LINES - 1), start + MAX_READ_LINES - 1)
        body = "\n".join(f"{n:>5} {lines[n - 1]}" for n in range(start, end + 1))
        more = f"\n[lines {end + 1}-{len(lines)} not shown; ask with start_line]" if end < len(lines) else ""
        return f"{path} (lines {start}-{end} of {len(lines)})\n{body}{more}"

    def _tool_list_files(self, path: str = "", pattern: str = "") -> str:
        prefix = self._resolve(path).relative_to(self.root).as_posix() if path else ""
        files = [f for f in self._list_files() if not prefix or prefix == "." or f.startswith(prefix + "/")]
        if pattern:
            files = [f for f in files if fnmatch.fnmatch(Path(f).name, pattern) or fnmatch.fnmatch(f, pattern)]
        shown = files[:MAX_LIST]
        extra = f"\n[{len(files) - MAX_LIST} more]" if len(files) > MAX_LIST else ""
        return "\n".join(shown) + extra if shown else "(no files)"

    def _tool_search(self, pattern: str, path: str = "") -> str:
        re.compile(pattern)  # a bad pattern is answered as such, here
        return _in_child(SEARCH_SECONDS, lambda: self._search(pattern, path),
                         f"the search for {pattern!r} took longer than {SEARCH_SECONDS:.0f}s (a pattern like "
                         "(a+)+ backtracks without end); search for a plainer pattern")

    def _search(self, pattern: str, path: str) -> str:
        regex = re.compile(pattern)
        prefix = self._resolve(path).relative_to(self.root).as_posix() if path else ""
        hits: list[str] = []
        for rel in self._list_files():
            if prefix and prefix != "." and rel != prefix and not rel.startswith(prefix + "/"):
                continue
            try:
                data = read_regular_file(self._resolve(rel), MAX_FILE_BYTES)  # out of the repo, into .git: skipped
            except ValueError:
                continue
            if data is None or looks_binary(data):
                continue
            for n, line in enumerate(text_lines(data), 1):
                if regex.search(line):
                    hits.append(f"{rel}:{n}: {line.strip()[:200]}")
                    if len(hits) >= MAX_MATCHES:
                        return "\n".join(hits) + "\n[more matches not shown]"
        return "\n".join(hits) or "(no matches)"


def _in_child(seconds: float, work: Callable[[], str], too_long: str) -> str:
    """`work()` in a forked child that is killed past `seconds`: Python's `re` cannot be interrupted, and
    one line can take a pattern exponential time. Its ValueError, OSError or re.error come back as
    ValueError; `too_long` is the ValueError past the time."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no cleanup of the parent's runs here (os._exit)
        code = 0
        try:
            os.close(read)
            try:
                answer = {"ok": work()}
            except (ValueError, OSError, re.error) as exc:
                answer = {"error": str(exc)}
            data = json.dumps(answer).encode()
            while data:
                data = data[os.write(write, data):]
        except BaseException:  # noqa: BLE001 - the parent reports a child that said nothing
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    done = False
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([read], [], [], left)[0]:
                chunk = os.read(read, 1 << 16)
                if not chunk:
                    done = True
                    break
                chunks.append(chunk)
    finally:
        os.close(read)
        if not done:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not done:
        raise ValueError(too_long)
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise ValueError("the search failed") from None
    if "error" in answer:
        raise ValueError(answer["error"])
    return answer["ok"]


_TEXT_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def text_tool_calls(content: str) -> list[ToolCall]:
    """Tool calls written as text (`<tool_call>{"name":..,"arguments":..}</tool_call>`).

    Local models often emit Hermes/Qwen-style calls that their server does not parse.
    """
    calls = []
    for match in _TEXT_CALL.finditer(content or ""):
        try:
            data = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            args = data.get("arguments", {})
            calls.append(ToolCall(id=f"call_{uuid.uuid4().hex[:8]}", name=data["name"],
                                  arguments=args if isinstance(args, str) else json.dumps(args)))
    return calls
