"""Turn check results, edit results and files into the messages the model reads.

Wording lives in `prompts/*.j2`; this module only gathers the facts the templates need.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agentloop.data import data_dir
from agentloop.files import looks_binary
from agentloop.workspace.checks import CommandResult

MAX_FILE_LINES = 400
MAX_POINTED_FILES = 6
_LANGS = {".py": "python", ".js": "javascript", ".ts": "typescript", ".go": "go", ".rs": "rust",
          ".java": "java", ".c": "c", ".h": "c", ".cpp": "cpp", ".rb": "ruby", ".sh": "bash",
          ".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml", ".md": "markdown"}
_PATHISH = re.compile(r"[\w./\\-]*[\w-]\.[A-Za-z0-9]{1,8}")


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
    folder = data_dir("prompts")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in sorted(folder.iterdir()) if p.is_file()}


@dataclass
class ShownFile:
    path: str
    content: str
    lang: str = ""
    note: str = ""


def show_file(root: Path, rel: str) -> ShownFile | None:
    """A file's text for the prompt; long files are cut with a note on how to read the rest."""
    try:
        data = (root / rel).read_bytes()
    except OSError:
        return None
    if looks_binary(data):
        return None
    lines = data.decode("utf-8", "replace").splitlines()
    note = ""
    if len(lines) > MAX_FILE_LINES:
        note = f"[{rel} has {len(lines)} lines; only the first {MAX_FILE_LINES} are shown. Use read_file for more.]"
        lines = lines[:MAX_FILE_LINES]
    return ShownFile(rel, "\n".join(lines), _LANGS.get(Path(rel).suffix, ""), note)


def pointed_files(outputs: Iterable[str], repo_files: Sequence[str], root: Path) -> list[str]:
    """Repository files that check output mentions (tracebacks, `path:line:` errors), in order."""
    known = set(repo_files)
    root_prefix = str(root).rstrip("/") + "/"
    found: list[str] = []
    for output in outputs:
        for token in _PATHISH.findall(output):
            token = token.replace("\\", "/")
            if token.startswith(root_prefix):
                token = token[len(root_prefix):]
            token = token.removeprefix("./")
            if token in known and token not in found:
                found.append(token)
                if len(found) >= MAX_POINTED_FILES:
                    return found
    return found


_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.M)


def imported_files(root: Path, rel: str, repo_files: Sequence[str]) -> list[str]:
    """Repository modules a Python file imports: a failing test points at the code it tests."""
    if not rel.endswith(".py"):
        return []
    shown = show_file(root, rel)
    if not shown:
        return []
    known = set(repo_files)
    base = str(Path(rel).parent).replace("\\", "/")
    found = []
    for match in _IMPORT.finditer(shown.content):
        module = (match.group(1) or match.group(2)).lstrip(".").replace(".", "/")
        for candidate in (f"{module}.py", f"{module}/__init__.py", f"{base}/{module}.py", f"src/{module}.py"):
            candidate = candidate.removeprefix("./")
            if candidate in known and candidate != rel and candidate not in found:
                found.append(candidate)
                break
    return found


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
    changed = line.rstrip() + ("  # changed" if "#" not in line else " (changed)")
    return {"example_path": path or "src/app.py", "example_search": line, "example_replace": changed,
            "example_line": number}


def format_example(edit_format: str, path: str, root: Path | None) -> str:
    """One correct edit in `edit_format`, written against the file at hand."""
    return render(f"example_{edit_format}.j2", **example_values(path, root)).rstrip()
