"""Turn check results, edit results and files into the messages the model reads.

Wording lives in `prompts/*.j2`; this module only gathers the facts the templates need.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path, PurePath
from typing import Any

from agentloop.data import data_dir
from agentloop.edits.apply import EXAMPLE_MARKERS
from agentloop.files import looks_binary, read_regular_file, real_inside
from agentloop.workspace.checks import CommandResult

_LANGS = {".py": "python", ".js": "javascript", ".ts": "typescript", ".go": "go", ".rs": "rust",
          ".java": "java", ".c": "c", ".h": "c", ".cpp": "cpp", ".rb": "ruby", ".sh": "bash",
          ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml", ".md": "markdown"}


@cache
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("prompts"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(template: str, **context: Any) -> str:
    text = _environment().get_template(template).render(**context)
    return _tidy(text).strip() + "\n"


SHOW_FILE_MAX_BYTES = 1_000_000
_FENCE_LINE = re.compile(r"^\s*(`{3,}|~{3,})")


def _tidy(text: str) -> str:
    """Collapse the blank-line runs that template logic leaves, but never inside a fenced block:
    a file shown with its blank lines changed is a file the model will quote wrongly."""
    out: list[str] = []
    fence = ""
    for line in text.split("\n"):
        m = _FENCE_LINE.match(line)
        if m and not fence:
            fence = m.group(1)
        elif m and line.strip() == fence[0] * len(line.strip()) and len(line.strip()) >= len(fence):
            fence = ""
        elif not fence and not line.strip() and out and not out[-1].strip():
            continue
        out.append(line)
    return "\n".join(out)


def template_hashes() -> dict[str, str]:
    """Hash of every prompt template, so a trajectory says exactly which wording it used."""
    hashes = {}
    for entry in sorted(os.scandir(data_dir("prompts")), key=lambda e: e.name):
        if entry.is_file():
            stat = entry.stat()
            hashes[entry.name] = _file_hash(entry.path, stat.st_mtime_ns, stat.st_size)
    return hashes


@lru_cache(maxsize=256)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:
    """A file's hash, read again only when it changed (many runs in one batch worker share it)."""
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:16]


@dataclass
class ShownFile:
    path: str
    content: str
    lang: str = ""
    note: str = ""
    title: str = ""  # shown in place of the path when only part of the file is shown ("x.py lines 3-9 of 900")
    outline: bool = False  # the content is an outline (line: definition), not lines of the file


def language(rel: str) -> str:
    """The fence language of a file, from its suffix ("" when unknown)."""
    return _LANGS.get(Path(rel).suffix, "")


def show_file(root: Path, rel: str) -> ShownFile | None:
    """A text file's content (None for a binary, unreadable or huge one, or a symlink: a check may plant
    one to anywhere). What of a long file the model is shown is for agentloop.run.context to decide:
    never its first N lines."""
    if real_inside(root, root / rel) != PurePath(rel):
        return None
    data = read_regular_file(root / rel, SHOW_FILE_MAX_BYTES)
    if data is None or looks_binary(data):
        return None
    return ShownFile(rel, data.decode("utf-8", "replace"), language(rel))


def check_view(result: CommandResult) -> dict[str, Any]:
    return {"command": result.command, "exit_code": result.exit_code, "passed": result.passed,
            "timed_out": result.timed_out, "output": result.output.rstrip()}


def example_values(path: str, root: Path | None = None) -> dict[str, Any]:
    """Values for a format's example, drawn from a real line of a real file when there is one."""
    line, number = "def greet(name):", 1
    shown = show_file(root, path) if root is not None and path else None
    if shown:
        numbered = [(n, text) for n, text in enumerate(shown.content.splitlines(), 1) if text.strip()]
        if numbered:
            number, line = numbered[0]
    changed = line.rstrip() + (EXAMPLE_MARKERS[0] if "#" not in line else EXAMPLE_MARKERS[1])
    # The function format's example names a definition the file cannot have: a small model copies the
    # example, and a real name there (measured: tabulate's first function) got that function rewritten.
    return {"example_path": path or "src/app.py", "example_search": line, "example_replace": changed,
            "example_line": number, "example_function": "name_of_the_function",
            "example_def": "def name_of_the_function(its, arguments):"}


def format_example(edit_format: str, path: str, root: Path | None) -> str:
    """One correct edit in `edit_format`, written against the file at hand."""
    return render(f"example_{edit_format}.j2", **example_values(path, root)).rstrip()
