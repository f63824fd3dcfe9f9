"""Small file rules every layer shares: writing a whole file or nothing, telling binary from text, and
where a path really leads (the core of every path-safety check: edits, write-back, read-only tools)."""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

BINARY_SNIFF = 8000  # git's own rule: a NUL byte in the first 8000 bytes makes a file binary


def looks_binary(data: bytes) -> bool:
    """True when `data` is not text to show or edit (a NUL byte near the start, as git decides)."""
    return b"\0" in data[:BINARY_SNIFF]


def names_git_dir(parts: Iterable[str]) -> bool:
    """True when a path's parts pass through a `.git` (in any case: case-insensitive file systems)."""
    return any(p.lower() == ".git" for p in parts)


def real_inside(root: Path, path: Path) -> PurePath | None:
    """Where `path` really is, every symlink followed, relative to the real `root`; None when outside it."""
    try:
        return Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
    except ValueError:
        return None


def read_regular_file(path: Path, limit: int) -> bytes | None:
    """The bytes of the regular file at `path` (symlinks followed) if it holds at most `limit` bytes;
    None for anything else. Never blocks: a FIFO a check left where a file was would hang a plain read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def text_lines(data: bytes) -> list[str]:
    """A file's lines as Python, git, editors and tracebacks number them: broken at \\n (a \\r before it
    dropped), not at the form feeds and other separators `str.splitlines` also breaks at."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def atomic_write(path: Path, data: bytes | str, *, mode: int | None = None, new_mode: int = 0o666,
                 durable: bool = False) -> None:
    """Write `path` whole or not at all: a temporary file beside it, then one rename over it.

    The temporary file is created exclusively and never through a symlink (a model may plant one at a
    predictable name), as `.<name>.<random>.<pid>.tmp` so a dead writer's leftover can be told by its pid.
    `new_mode` is what a new file gets, less the umask; `mode` sets the permissions exactly (an existing
    file's). `durable` syncs the data to disk before the rename (records that must survive a crash).
    """
    path = Path(path)
    data = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = _create_temp(path, new_mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _create_temp(path: Path, perms: int) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.{os.getpid()}.tmp")
        try:
            return os.open(tmp, flags, perms), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file next to {path}")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_input_text(path: Path, what: str, expected: str) -> str:
    """The UTF-8 text of a file the user named; a missing or unreadable one is a usage error (exit 2)."""
    from agentloop.errors import UsageError

    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({exc}); {expected}") from None
