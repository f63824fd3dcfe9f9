"""Find the code a failing check is about, so the first prompt shows the bug and not just the test.

From the failing output: the places a traceback names (Python's `File "x", line N, in f`, pytest's
`x.py:N: in f`, and any `path:line`), the failing test functions, and the definitions in the
repository of the names those tests and traceback lines use (Python through `ast` and the test
module's imports, other languages through a plain symbol search). Each place becomes a `Part`:
the enclosing function around a line, a whole small file, or the outline (classes and functions
with line numbers) of a long one. Parts carry a value rank; `agentloop.run.budget` picks them in
that order. A big file is never shown as its first N lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentloop.edits.definitions import UNPARSABLE
from agentloop.files import looks_binary, read_regular_file, real_inside, text_lines
from agentloop.workspace.guard import TEST_PATH

WHOLE_FILE_LINES = 150  # code files up to this long may be shown whole
WHOLE_TEST_LINES = 60  # test files up to this long may be shown whole; longer: the failing test only
MAX_SNIPPET_LINES = 80  # an enclosing function longer than this is shown as a window around the line
# ... except a function of the code under test that the failure points into: shown whole up to this long
# (the function edit format asks for the whole definition; the budget may still shorten it, and says so)
MAX_DEFINITION_LINES = 160
WINDOW = 12  # lines either side of a named line when no enclosing function is known (or it is huge)
MAX_FILES = 8
MAX_OUTLINE_ROWS = 40  # a longer outline keeps the definitions nearest the shown lines
MAX_DEFINITIONS = 12
MAX_SEARCHED_FILES = 3000  # a symbol search reads at most this many files
MAX_FILE_BYTES = 1_000_000  # a larger file is not read (generated code, data): its lines are never a prompt's

# Value ranks, best first (see agentloop.run.budget).
TRACEBACK, CODE_UNDER_TEST, TEST_FUNCTION, OUTLINE, OTHER = 1, 2, 3, 4, 5

_PY_FRAME = re.compile(r'File "([^"]+)", line (\d+)(?:, in ([\w<>.]+))?')
_PYTEST_FRAME = re.compile(r"^([\w./\\-]*[\w-]\.[A-Za-z0-9]{1,8}):(\d+): (?:in ([\w<>.]+)|(\w+))", re.M)
# starts only where a path can (not inside a run of path characters: every start in a long one is quadratic)
_PATH_LINE = re.compile(r"(?<![\w./\\-])((?:[A-Za-z]:)?[\w./\\-]*[\w-]\.[A-Za-z0-9]{1,8}):(\d+)(?::\d+)?")
_FAILED_ID = re.compile(r"^(?:FAILED|ERROR) ([\w./\\-]+\.py)::([\w:\[\]./-]+?)(?: - |\s*$)", re.M)
_FAILED_ID2 = re.compile(r"^([\w./\\-]+\.py)::([\w:]+)(?:\[[^\]]*\])? (?:FAILED|ERROR)", re.M)
_PYTEST_HEADER = re.compile(r"^_{3,} (?:ERROR collecting )?([\w.]+)(?:\[[^\]]*\])? _{3,}$", re.M)
_SYMBOL_DEF = r"^\s*(?:export\s+)?(?:pub(?:\([\w:]+\))?\s+)?(?:async\s+)?(?:def|function|fn|func|class|struct|" \
              r"enum|trait|interface|type)\s+{name}\b"
_DEF_LINE = re.compile(r"^\s*(?:export\s+)?(?:pub(?:\([\w:]+\))?\s+)?(?:async\s+)?(?:static\s+)?"
                       r"(?:def|function|fn|func|class|struct|enum|trait|impl|interface)\b[^;]*$")
_CALLED = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_KEYWORDS = frozenset("if for while return assert print len range str int float list dict set tuple isinstance "
                      "super not and or in is lambda with switch catch function new typeof sizeof self "
                      "expect describe it test".split())
_CODE_EXTS = {".py", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".c", ".h", ".cc",
              ".cpp", ".hpp", ".rb", ".php", ".cs", ".kt", ".swift", ".scala"}


@dataclass(frozen=True)
class Location:
    """A line a failing output names: `path` relative to the repository, 1-based `line`."""

    path: str
    line: int
    function: str | None = None


@dataclass
class Part:
    """A piece of one file for the prompt: lines `start`..`end` (1-based, inclusive), or an outline."""

    path: str
    kind: str  # "whole", "lines" or "outline"
    start: int
    end: int
    total: int  # lines in the file
    text: str
    value: int
    why: str = ""
    focus: int | None = None  # the line the failing output names, if any: a shortened part keeps it
    definition: str = ""  # the Python definition these lines are (part of), if any
    span: tuple[int, int] | None = None  # that definition's first and last lines

    @property
    def whole_definition(self) -> bool:
        return self.span is not None and self.kind == "lines" and self.start <= self.span[0] and \
            self.end >= self.span[1]

    @property
    def label(self) -> str:
        if self.kind == "whole":
            return f"{self.path} (all {self.total:,} lines)"
        if self.kind == "outline":
            return f"{self.path}: outline of its {self.total:,} lines (line: definition)"
        return f"{self.path} lines {self.start}-{self.end} of {self.total:,}"


@dataclass
class Finding:
    """What the context finder found: where the failure is, and the parts to show, best first."""

    locations: list[Location] = field(default_factory=list)
    failing_tests: list[tuple[str, str]] = field(default_factory=list)  # (path, test name)
    parts: list[Part] = field(default_factory=list)
    wholes: dict[str, Part] = field(default_factory=dict)  # short files: whole, in place of their parts


# -- reading files -------------------------------------------------------------------------------
class _Files:
    """The repository's files, read once each."""

    def __init__(self, root: Path, repo_files: Sequence[str]):
        self.root, self.repo_files = root, list(repo_files)
        self.known = set(repo_files)
        self._lines: dict[str, list[str] | None] = {}
        self._trees: dict[str, ast.Module | None] = {}
        self._modules: dict[str, str] | None = None
        self._by_name: dict[str, list[str]] | None = None

    def lines(self, rel: str) -> list[str] | None:
        """A file's lines; None for a binary, huge or not regular file (`read_regular_file`), or one that is
        (through a symlink) outside the files the model may see: outside the repository, in .git, or private."""
        if rel not in self._lines:
            inside = real_inside(self.root, self.root / rel)
            data = read_regular_file(self.root / rel, MAX_FILE_BYTES) \
                if inside is not None and inside.as_posix() in self.known else None
            self._lines[rel] = None if data is None or looks_binary(data) else text_lines(data)
        return self._lines[rel]

    def tree(self, rel: str) -> ast.Module | None:
        if rel not in self._trees:
            lines = self.lines(rel) if rel.endswith(".py") else None
            try:
                self._trees[rel] = ast.parse("\n".join(lines)) if lines is not None else None
            except UNPARSABLE:
                self._trees[rel] = None
        return self._trees[rel]

    def module_file(self, dotted: str) -> str | None:
        """The repository file of a dotted module name (`pkg.mod` -> `src/pkg/mod.py`)."""
        if self._modules is None:
            self._modules = {}
            for rel in self.repo_files:
                if not rel.endswith(".py"):
                    continue
                parts = rel[:-3].split("/")
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                for k in range(len(parts)):  # every suffix: src/pkg/mod -> pkg.mod, mod
                    name = ".".join(parts[k:])
                    if name and (name not in self._modules or len(rel) < len(self._modules[name])):
                        self._modules[name] = rel
        return self._modules.get(dotted)

    def resolve(self, token: str) -> str | None:
        """A path as an output wrote it, as a repository file (absolute, ./relative, or a unique suffix)."""
        token = token.replace("\\", "/")
        root = str(self.root).rstrip("/") + "/"
        if token.startswith(root):
            token = token[len(root):]
        token = token.removeprefix("./")
        if token in self.known:
            return token
        parts = [p for p in token.split("/") if p not in ("", ".", "..")]
        if not parts:
            return None
        if self._by_name is None:
            self._by_name = {}
            for rel in self.repo_files:
                self._by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
        same_name = self._by_name.get(parts[-1], [])
        for k in range(min(len(parts), 4), 1, -1):  # installed copies: site-packages/pkg/mod.py -> src/pkg/mod.py
            tail = "/" + "/".join(parts[-k:])
            hits = [f for f in same_name if f.endswith(tail) or f == tail[1:]]
            if len(hits) == 1:
                return hits[0]
        if len(parts) == 1 and len(same_name) == 1:
            return same_name[0]
        return None


# -- the failing output ----------------------------------------------------------------------------
def traceback_locations(outputs: Iterable[str], files: _Files) -> list[Location]:
    """The repository lines the failing outputs name, in the order they are named, no repeats."""
    found: list[Location] = []
    seen: set[tuple[str, int]] = set()

    def add(token: str, line: str, function: str | None) -> None:
        rel = files.resolve(token)
        if rel is None or not line.isdigit() or not 1 <= int(line) <= len(files.lines(rel) or []):
            return  # not a file the model may see, or no such line
        if (rel, int(line)) not in seen:
            seen.add((rel, int(line)))
            found.append(Location(rel, int(line), function))

    for output in outputs:
        hits: list[tuple[int, str, str, str | None]] = []
        for m in _PY_FRAME.finditer(output):
            hits.append((m.start(), m.group(1), m.group(2), m.group(3)))
        for m in _PYTEST_FRAME.finditer(output):
            hits.append((m.start(), m.group(1), m.group(2), m.group(3)))
        for m in _PATH_LINE.finditer(output):
            hits.append((m.start(), m.group(1), m.group(2), None))
        for _, token, line, function in sorted(hits, key=lambda h: (h[0], h[3] is None)):
            add(token, line, function)
    return found


def failing_tests(outputs: Iterable[str], files: _Files, locations: Sequence[Location]) -> list[tuple[str, str]]:
    """(test file, test function) of every failing test the outputs name (pytest ids, section
    headers, and traceback frames in test files)."""
    tests: list[tuple[str, str]] = []

    def add(path: str | None, name: str) -> None:
        name = name.split("[", 1)[0].split("::")[-1].split(".")[-1]
        if path and name and (path, name) not in tests:
            tests.append((path, name))

    headers: list[str] = []
    for output in outputs:
        for m in list(_FAILED_ID.finditer(output)) + list(_FAILED_ID2.finditer(output)):
            add(files.resolve(m.group(1)), m.group(2))
        headers += [m.group(1) for m in _PYTEST_HEADER.finditer(output)]
    for loc in locations:
        if TEST_PATH.search(loc.path) and loc.function and loc.function != "<module>":
            add(loc.path, loc.function)
    test_files = {loc.path for loc in locations if TEST_PATH.search(loc.path)}
    for header in headers:  # `____ TestX.test_y ____`: find which test file defines it
        name = header.split(".")[-1]
        for path in test_files:
            if _find_def(files, path, name) is not None:
                add(path, name)
    return tests


# -- Python definitions ---------------------------------------------------------------------------
_Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _first_line(node: _Def) -> int:
    return min([node.lineno] + [d.lineno for d in node.decorator_list])


def _find_def(files: _Files, rel: str, dotted: str) -> _Def | None:
    """The definition `name` or `Class.method` in a Python file (top level, or a method)."""
    tree = files.tree(rel)
    if tree is None:
        return None
    body: list[ast.stmt] = tree.body
    node: _Def | None = None
    for name in dotted.split("."):
        node = next((n for n in body if isinstance(n, _Def) and n.name == name), None)
        if node is None:
            # also a test method in a class, when only the method name is known
            if "." not in dotted:
                for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
                    hit = next((n for n in cls.body if isinstance(n, _Def) and n.name == name), None)
                    if hit is not None:
                        return hit
            return None
        body = node.body
    return node


def _enclosing(tree: ast.Module, line: int) -> _Def | None:
    """The innermost function (or, outside any function, class) whose lines hold `line`."""
    holding = [n for n in ast.walk(tree)
               if isinstance(n, _Def) and _first_line(n) <= line <= (n.end_lineno or n.lineno)]
    functions = [n for n in holding if not isinstance(n, ast.ClassDef)]
    return max(functions or holding, key=_first_line, default=None)


def _imports(tree: ast.Module, rel: str) -> dict[str, str]:
    """Local name -> dotted target (`mod` or `mod.name`) for the imports of a module."""
    names: dict[str, str] = {}
    package = ".".join(rel[:-3].split("/")[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    names[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: max(0, len(package.split(".")) - node.level + 1)] if package else []
                base = ".".join([*up, *( [base] if base else [])])
            for alias in node.names:
                if alias.name != "*":
                    names[alias.asname or alias.name] = f"{base}.{alias.name}" if base else alias.name
    return names


def _used_names(node: ast.AST) -> list[list[str]]:
    """Dotted name chains a piece of code loads (`typedkey`, `keys.typedkey`, `obj.method`), in order."""
    chains: list[list[str]] = []
    for sub in ast.walk(node):
        chain: list[str] = []
        cur = sub
        while isinstance(cur, ast.Attribute):
            chain.insert(0, cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name) and isinstance(sub, ast.Attribute | ast.Name) and \
                isinstance(getattr(sub, "ctx", None), ast.Load):
            chain.insert(0, cur.id)
            if chain not in chains:
                chains.append(chain)
    return chains


def _resolve_python(files: _Files, target: str, depth: int = 0) -> tuple[str, _Def] | None:
    """The file and definition of a dotted import target (`pkg.mod.func`, `pkg.Class`), following
    re-exports (`from ._impl import func` in a package's __init__) a few levels."""
    parts = target.split(".")
    for k in range(len(parts) - 1, 0, -1):
        rel = files.module_file(".".join(parts[:k]))
        if rel is None:
            continue
        rest = ".".join(parts[k:])
        node = _find_def(files, rel, rest)
        if node is not None:
            return rel, node
        tree = files.tree(rel)
        if tree is not None and depth < 3:
            imported = _imports(tree, rel).get(parts[k])
            if imported and imported != target:
                return _resolve_python(files, ".".join([imported, *parts[k + 1:]]), depth + 1)
            for base in _star_imports(tree, rel):  # `from .recipes import *` in a package's __init__
                hit = _resolve_python(files, f"{base}.{rest}", depth + 1)
                if hit is not None:
                    return hit
        return None
    return None


def _star_imports(tree: ast.Module, rel: str) -> list[str]:
    """The modules a module imports everything from (`from .recipes import *`), as dotted names."""
    package = ".".join(rel[:-3].split("/")[:-1])  # as `_imports` reckons it
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: max(0, len(package.split(".")) - node.level + 1)] if package else []
                base = ".".join([*up, *([base] if base else [])])
            if base:
                out.append(base)
    return out


_TASK_DOTTED = re.compile(r"\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\b")
_TASK_NAME = re.compile(r"`([A-Za-z_]\w*)`|\b([A-Za-z_]\w*)\(|\b([A-Za-z]\w*_\w+|[A-Za-z]+[a-z0-9][A-Z]\w*)\b")
MAX_TASK_NAMES = 3  # definitions of names the task text mentions, at most


def task_definitions(files: _Files, task: str) -> list[tuple[str, _Def]]:
    """The definitions of the names the task text mentions (`six.iteritems`, `typedkey()`, `LRUCache`,
    `format_int_list`): dotted names through the modules and their re-exports, others by a search of
    the non-test Python files for one definition of that name. For a test that reaches the code under
    test in a way the traceback does not show (six's `getattr(six, 'iter' + 'items')`)."""
    found: list[tuple[str, _Def]] = []

    def add(hit: tuple[str, _Def] | None) -> None:
        if hit is not None and not TEST_PATH.search(hit[0]) and all(hit[1] is not f[1] for f in found):
            found.append(hit)

    dotted = list(dict.fromkeys(_TASK_DOTTED.findall(task)))
    unresolved: list[str] = []  # defined where a module's top level does not show it (six: under `if PY3:`)
    for name in dotted:
        hit = _resolve_python(files, name)
        add(hit)
        if hit is None:
            unresolved.append(name.rsplit(".", 1)[-1])
    bare = [next(g for g in m.groups() if g) for m in _TASK_NAME.finditer(task)]
    bare = unresolved + [n for n in dict.fromkeys(bare) if not any(n in d.split(".") for d in dotted)]
    bare = [n for n in dict.fromkeys(bare) if n not in _KEYWORDS and len(n) >= 4]
    for loc in symbol_definitions(files, bare, ".py"):
        tree = files.tree(loc.path)
        node = _enclosing(tree, loc.line) if tree is not None else None
        if node is not None and node.name == loc.function:
            add((loc.path, node))
    return found[:MAX_TASK_NAMES]


def python_definitions(files: _Files, rel: str, node: ast.AST) -> list[tuple[str, _Def]]:
    """The repository definitions the names in `node` (code of module `rel`) refer to."""
    tree = files.tree(rel)
    if tree is None:
        return []
    imports = _imports(tree, rel)
    local = {n.name for n in tree.body if isinstance(n, _Def)}
    found: list[tuple[str, _Def]] = []
    classes: list[tuple[str, ast.ClassDef]] = []
    attrs = {sub.attr for sub in ast.walk(node) if isinstance(sub, ast.Attribute)}  # Box().count(), box.put()
    for chain in _used_names(node):
        hit: tuple[str, _Def] | None = None
        if chain[0] in imports:
            target = imports[chain[0]]
            for k in range(len(chain), 0, -1):  # the longest chain that names a definition
                hit = _resolve_python(files, ".".join([target, *chain[1:k]]))
                if hit:
                    break
        elif chain[0] in local and not TEST_PATH.search(rel):
            node_ = _find_def(files, rel, ".".join(chain[:2]) if len(chain) > 1 else chain[0]) or \
                _find_def(files, rel, chain[0])
            hit = (rel, node_) if node_ is not None else None
        if hit and all(hit[1] is not f[1] for f in found):
            found.append(hit)
            if isinstance(hit[1], ast.ClassDef):
                classes.append((hit[0], hit[1]))
    for path, cls in classes:  # obj.method(...) on an object of a class the code uses
        for item in cls.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name in attrs and \
                    not item.name.startswith("__") and all(item is not f[1] for f in found):
                found.append((path, item))
    return found


# -- other languages ------------------------------------------------------------------------------
def symbol_definitions(files: _Files, names: Iterable[str], suffix: str) -> list[Location]:
    """Where `def name`, `function name`, `fn name`, `class name`... are, in files like `suffix`
    (one pass over them; the first definition of each name)."""
    wanted = [n for n in dict.fromkeys(names) if n not in _KEYWORDS and len(n) >= 3]
    if not wanted:
        return []
    pattern = re.compile(_SYMBOL_DEF.format(name="(" + "|".join(map(re.escape, wanted)) + ")"))
    found: dict[str, Location] = {}
    for rel in files.repo_files[:MAX_SEARCHED_FILES]:
        if Path(rel).suffix != suffix or TEST_PATH.search(rel):
            continue
        for n, text in enumerate(files.lines(rel) or [], 1):
            m = pattern.match(text)
            if m and m.group(1) not in found:
                found[m.group(1)] = Location(rel, n, m.group(1))
        if len(found) == len(wanted):
            break
    return [found[n] for n in wanted if n in found]


def _block_span(lines: list[str], line: int) -> tuple[int, int]:
    """The definition around `line` in a non-Python file: up to its def-like line, down by braces or indent."""
    start = line
    while start > 1 and not _DEF_LINE.match(lines[start - 1]) and line - start < MAX_SNIPPET_LINES:
        start -= 1
    if not _DEF_LINE.match(lines[start - 1]):
        return max(1, line - WINDOW), min(len(lines), line + WINDOW)
    depth, opened, end = 0, False, start
    indent = len(lines[start - 1]) - len(lines[start - 1].lstrip())
    for n in range(start, min(len(lines), start + MAX_SNIPPET_LINES) + 1):
        text = lines[n - 1]
        depth += text.count("{") - text.count("}")
        opened = opened or "{" in text
        end = n
        if opened and depth <= 0:
            break
        if not opened and n > start and text.strip() and len(text) - len(text.lstrip()) <= indent \
                and not text.strip().startswith(("end", ")", "]")):
            end = n - 1
            break
    return start, max(end, line)


# -- outlines and parts -----------------------------------------------------------------------------
def outline(files: _Files, rel: str, focus: Sequence[int] = ()) -> str:
    """Classes and functions of a file with their line numbers, one a line. A long outline keeps
    the classes and the definitions nearest the `focus` lines; runs of others become one line."""
    lines = files.lines(rel) or []
    tree = files.tree(rel)
    rows: list[tuple[int, str, bool]] = []  # (line, text, is a class)
    if tree is not None:
        def visit(body: list[ast.stmt], depth: int) -> None:
            for node in body:
                if isinstance(node, _Def):
                    text = "    " * depth + lines[node.lineno - 1].strip()
                    rows.append((node.lineno, text, isinstance(node, ast.ClassDef)))
                    if isinstance(node, ast.ClassDef) and depth == 0:
                        visit(node.body, 1)
        visit(tree.body, 0)
    else:
        rows = [(n, text.strip(), text.lstrip().startswith(("class ", "struct ", "impl ")))
                for n, text in enumerate(lines, 1) if _DEF_LINE.match(text)]
    keep = set(range(len(rows)))
    if len(rows) > MAX_OUTLINE_ROWS:
        near = sorted(range(len(rows)), key=lambda i: min((abs(rows[i][0] - f) for f in focus), default=rows[i][0]))
        keep = {i for i in near[:MAX_OUTLINE_ROWS // 2]} | {i for i, r in enumerate(rows) if r[2]}
        keep |= set(range(min(4, len(rows)))) | set(range(len(rows) - 2, len(rows)))
    out: list[str] = []
    skipped: list[int] = []

    def flush() -> None:
        if skipped:
            out.append(f"      [{len(skipped)} more definitions, lines {rows[skipped[0]][0]}-{rows[skipped[-1]][0]}]")
            skipped.clear()

    for i, (n, text, _) in enumerate(rows):
        if i in keep:
            flush()
            out.append(f"{n:>5}: {text}")
        else:
            skipped.append(i)
    flush()
    return "\n".join(out)


def _span(files: _Files, rel: str, line: int, longest: int = MAX_SNIPPET_LINES) -> tuple[int, int, str]:
    """Lines of the function around `line` (or a window), and what they are: the whole function when
    it is at most `longest` lines."""
    lines = files.lines(rel) or []
    line = min(max(1, line), max(1, len(lines)))
    tree = files.tree(rel)
    if tree is not None:
        node = _enclosing(tree, line)
        if node is not None:
            start, end = _first_line(node), node.end_lineno or node.lineno
            if end - start + 1 <= longest:
                return start, end, node.name
            return max(start, line - WINDOW), min(end, line + WINDOW), f"part of {node.name}"
        return max(1, line - WINDOW), min(len(lines), line + WINDOW), ""
    start, end = _block_span(lines, line)
    return start, end, ""


def _lines_part(files: _Files, rel: str, start: int, end: int, value: int, why: str) -> Part:
    lines = files.lines(rel) or []
    return Part(rel, "lines", start, end, len(lines), "\n".join(lines[start - 1:end]), value, why)


def whole_part(files: _Files, rel: str, value: int, why: str) -> Part | None:
    lines = files.lines(rel)
    if lines is None:
        return None
    return Part(rel, "whole", 1, len(lines), len(lines), "\n".join(lines), value, why)


def small_enough(rel: str, total: int) -> bool:
    """Whether a file may be shown whole: short code files, very short tests."""
    return total <= (WHOLE_TEST_LINES if TEST_PATH.search(rel) else WHOLE_FILE_LINES)


def find_context(root: Path, outputs: Sequence[str], repo_files: Sequence[str],
                 given: Sequence[str] = (), task: str = "") -> Finding:
    """The parts of the repository a failing output is about, best first (see the module docstring).

    `given`: files the user named (`--file`): shown whole when short, else outlined with any part found.
    `task`: the task text; the definitions of the names it mentions come after those the failure leads to.
    """
    files = _Files(root, repo_files)
    finding = Finding()
    finding.locations = traceback_locations(outputs, files)
    finding.failing_tests = failing_tests(outputs, files, finding.locations)
    parts: list[Part] = []
    spans: dict[str, list[tuple[int, int]]] = {}

    def add_span(rel: str, start: int, end: int, value: int, why: str, focus: int | None = None,
                 definition: _Def | None = None) -> None:
        have = spans.setdefault(rel, [])
        if any(s <= start and end <= e for s, e in have):
            return
        have.append((start, end))
        part = _lines_part(files, rel, start, end, value, why)
        part.focus = focus
        if definition is not None:
            part.definition = definition.name
            part.span = (_first_line(definition), definition.end_lineno or definition.lineno)
        parts.append(part)

    # 1. Every line the traceback names, in its enclosing function: the frames in the code under test
    # rank above those in tests (the test's own function comes with rank 3 below).
    # the innermost frame (named last) first; before all, the lines pytest says an exception was raised at
    raised = _raise_points(outputs, files)
    locations = sorted(finding.locations[-4 * MAX_FILES:][::-1], key=lambda loc: (loc.path, loc.line) not in raised)
    for loc in locations:
        is_test = bool(TEST_PATH.search(loc.path))
        start, end, name = _span(files, loc.path, loc.line, MAX_SNIPPET_LINES if is_test else MAX_DEFINITION_LINES)
        what = f"{name}, " if name else ""
        tree = None if is_test else files.tree(loc.path)
        node = _enclosing(tree, loc.line) if tree is not None else None
        add_span(loc.path, start, end, TEST_FUNCTION if is_test else TRACEBACK,
                 f"{what}around line {loc.line} named by the failing output", focus=loc.line,
                 definition=node if node is not None and not isinstance(node, ast.ClassDef) else None)
    # 2. What the failing tests, and the traceback's lines, use: their definitions in the repository.
    sources: list[tuple[str, ast.AST]] = []
    for path, name in finding.failing_tests:
        node = _find_def(files, path, name)
        if node is not None:
            sources.append((path, node))
            add_span(path, _first_line(node), node.end_lineno or node.lineno, TEST_FUNCTION,
                     f"the failing test {name}")
    for loc in locations:
        tree = files.tree(loc.path)
        if tree is not None:
            stmt = _statement_at(tree, loc.line)
            if stmt is not None:
                sources.append((loc.path, stmt))
    definitions: list[tuple[str, _Def]] = []
    for path, node in sources:
        for hit in python_definitions(files, path, node):
            if all(hit[1] is not d[1] for d in definitions):
                definitions.append(hit)
    # Then the names the task text mentions, after those the failure leads to.
    used = [(path, node, "used by the failing code") for path, node in definitions[:MAX_DEFINITIONS]]
    named = [(path, node, "named by the task") for path, node in (task_definitions(files, task) if task else [])]
    for path, node, why in used + named:
        start, end = _first_line(node), node.end_lineno or node.lineno
        is_class = isinstance(node, ast.ClassDef)
        if end - start + 1 > (MAX_SNIPPET_LINES if is_class else MAX_DEFINITION_LINES):
            # A long class: its head (up to its first method); the methods used come as their own parts,
            # the rest is in the outline. A very long function: its head.
            methods = [_first_line(n) for n in node.body if isinstance(n, _Def)] if is_class else []
            end = min([start + MAX_SNIPPET_LINES - 1] + [m - 1 for m in methods if m > start])
        add_span(path, start, end, CODE_UNDER_TEST, f"{node.name}, {why}", definition=None if is_class else node)
    # Other languages: the names called on the lines the output names, by a plain symbol search.
    for loc in locations:
        suffix = Path(loc.path).suffix
        if suffix == ".py" or suffix not in _CODE_EXTS:
            continue
        lines = files.lines(loc.path) or []
        start, end, _ = _span(files, loc.path, loc.line)
        called = dict.fromkeys(_CALLED.findall("\n".join(lines[start - 1:end])))
        for hit in symbol_definitions(files, called, suffix)[:MAX_DEFINITIONS]:
            if hit.path == loc.path and start <= hit.line <= end:
                continue
            s, e, _ = _span(files, hit.path, hit.line + 1)
            add_span(hit.path, min(s, hit.line), e, CODE_UNDER_TEST, f"{hit.function}, called at {loc.path}:{loc.line}")
    # Files the user named come whole when short.
    for rel in given:
        lines = files.lines(rel)
        if lines is not None and rel not in spans:
            spans[rel] = []
            if len(lines) <= WHOLE_FILE_LINES:
                part = whole_part(files, rel, CODE_UNDER_TEST, "named with --file")
            else:
                part = Part(rel, "outline", 1, len(lines), len(lines), outline(files, rel), CODE_UNDER_TEST,
                            "named with --file")
            if part:
                parts.append(part)
    # 3. Short files whole, in place of their parts; long ones get an outline for the rest.
    finding.parts = _complete(files, parts, spans, finding)
    return finding


def _raise_points(outputs: Iterable[str], files: _Files) -> set[tuple[str, int]]:
    """The lines pytest names as where an exception was raised (`pkg/mod.py:277: ValueError`)."""
    points: set[tuple[str, int]] = set()
    for output in outputs:
        for m in _PYTEST_FRAME.finditer(output):
            rel = files.resolve(m.group(1)) if m.group(4) else None
            if rel is not None:
                points.add((rel, int(m.group(2))))
    return points


def _statement_at(tree: ast.Module, line: int) -> ast.stmt | None:
    """The innermost simple statement on `line` (the code a traceback line quotes)."""
    best: ast.stmt | None = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and not isinstance(node, _Def | ast.ClassDef) and \
                node.lineno <= line <= (node.end_lineno or node.lineno):
            if best is None or node.lineno >= best.lineno:
                best = node
    return best


def _complete(files: _Files, parts: list[Part], spans: dict[str, list[tuple[int, int]]],
              finding: Finding) -> list[Part]:
    """Each file's parts, plus its outline when long (short files get a whole view in `finding.wholes`);
    the files are the first `MAX_FILES` named."""
    order = list(dict.fromkeys(p.path for p in parts))[:MAX_FILES]
    out: list[Part] = []
    for rel in order:
        mine = [p for p in parts if p.path == rel]
        total = mine[0].total
        best = min(p.value for p in mine)
        if any(p.kind == "whole" for p in mine):
            out += [p for p in mine if p.kind == "whole"]
            continue
        mine = _absorbed(mine)
        out += mine
        if small_enough(rel, total):
            why = "; ".join(dict.fromkeys(p.why for p in mine if p.why))
            whole = whole_part(files, rel, best, why)
            if whole is not None:
                finding.wholes[rel] = whole
        elif total > 40 and not any(p.kind == "outline" for p in mine):
            text = outline(files, rel, [line for p in mine for line in (p.start, p.end)])
            if text:
                out.append(Part(rel, "outline", 1, total, total, text, max(best, OUTLINE), "the rest of the file"))
    return sorted(out, key=lambda p: p.value)


def _absorbed(parts: list[Part]) -> list[Part]:
    """One file's line parts without those inside a later, larger one (a method found first, its class
    after): the lines would be shown twice. The largest part around it takes the better value and the focus."""
    kept: list[Part] = []
    for part in parts:
        around = [q for q in parts if q.kind == part.kind == "lines" and q.start <= part.start and part.end <= q.end
                  and (q.start, q.end) != (part.start, part.end)]
        if not around:
            kept.append(part)
        else:
            outer = max(around, key=lambda q: q.end - q.start)  # the largest: inside no other
            outer.value, outer.focus = min(outer.value, part.value), outer.focus or part.focus
    return kept


def changed_views(root: Path, rel: str, changed_lines: Sequence[int]) -> list[Part]:
    """How to show a file after an edit: whole when short, else the functions around the changed
    lines and an outline (never its first N lines)."""
    files = _Files(root, [rel])
    lines = files.lines(rel)
    if lines is None:
        return []
    if len(lines) <= WHOLE_FILE_LINES:  # a changed test file too: the model has just written it
        part = whole_part(files, rel, CODE_UNDER_TEST, "changed")
        return [part] if part else []
    spans: list[tuple[int, int]] = []
    out: list[Part] = []
    for line in list(dict.fromkeys(changed_lines))[:6] or [1]:
        start, end, _ = _span(files, rel, line)
        if any(s <= start and end <= e for s, e in spans):
            continue
        spans.append((start, end))
        out.append(_lines_part(files, rel, start, end, CODE_UNDER_TEST, "changed"))
    text = outline(files, rel, changed_lines)
    if text:
        out.append(Part(rel, "outline", 1, len(lines), len(lines), text, OUTLINE, "the rest of the file"))
    return out
