"""The context finder on real pytest failures in a multi-module package, and the first-prompt budget."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agentloop.run import budget, context

KEYS = '''\
"""Key functions for memoizing decorators."""

__all__ = ("hashkey", "typedkey")


class _HashedTuple(tuple):
    """A tuple that ensures that hash() will be called no more than once per element."""

    __hashvalue = None

    def __hash__(self, hash=tuple.__hash__):
        hashvalue = self.__hashvalue
        if hashvalue is None:
            self.__hashvalue = hashvalue = hash(self)
        return hashvalue


_kwmark = (_HashedTuple,)


def hashkey(*args, **kwargs):
    """Return a cache key for the specified hashable arguments."""
    if kwargs:
        return _HashedTuple(args + sum(sorted(kwargs.items()), _kwmark))
    else:
        return _HashedTuple(args)


def typedkey(*args, **kwargs):
    """Return a typed cache key for the specified hashable arguments."""
    key = hashkey(*args, **kwargs)
    key += tuple(type(v) for v in args)
    return key
'''
# The bug: typed keys must also carry the types of keyword values.
BUGGY_TYPEDKEY = '''\
def typedkey(*args, **kwargs):
    """Return a typed cache key for the specified hashable arguments."""
    key = hashkey(*args, **kwargs)
    return key
'''

TEST_KEYS = '''\
import unittest

import shop.keys
from shop import keys


class CacheKeysTest(unittest.TestCase):
    def test_hashkey(self, key=shop.keys.hashkey):
        self.assertEqual(key(), key())
        self.assertEqual(hash(key()), hash(key()))
        self.assertEqual(key(1, 2, 3), key(1, 2, 3))


def test_typedkey():
    key = keys.typedkey
    assert key(1) == key(1)
    assert key(1) != key(1.0)
    assert key(1, a=2) == key(1, a=2)


def test_padding_a():
    assert 1 + 1 == 2
''' + "".join(f"\n\ndef test_filler_{n}():\n    assert {n} == {n}\n" for n in range(30))


def _big_module() -> str:
    """A 1,200-line module whose bug (a division by zero) is in a function near line 900."""
    out = ['"""Prices."""', "", "TAX = 0.2", ""]
    for n in range(110):
        out += ["", f"def helper_{n}(value):", f'    """Helper {n}."""', f"    value = value + {n}",
                "    value = value * 2", "    value = value - 1", "    return value", ""]
    out += ["", "def discount(price, percent):", '    """The price after a percentage discount."""',
            "    if percent < 0:", "        raise ValueError('negative discount')",
            "    return price - price * percent / 0  # the bug: / 100", ""]
    for n in range(110, 145):
        out += ["", f"def helper_{n}(value):", f'    """Helper {n}."""', f"    return value + {n}", ""]
    out += ["", "def total(prices, percent=0):", "    return sum(discount(p, percent) for p in prices)", ""]
    return "\n".join(out) + "\n"


TEST_PRICING = '''\
from shop.pricing import total


def test_total():
    assert total([10, 20], percent=10) == 27
'''


def _repo(tmp_path: Path, keys: str = KEYS) -> Path:
    (tmp_path / "src" / "shop").mkdir(parents=True)
    (tmp_path / "tests").mkdir()
    (tmp_path / "src" / "shop" / "__init__.py").write_text("from .pricing import total\n")
    (tmp_path / "src" / "shop" / "keys.py").write_text(keys)
    (tmp_path / "src" / "shop" / "pricing.py").write_text(_big_module())
    (tmp_path / "tests" / "test_keys.py").write_text(TEST_KEYS)
    (tmp_path / "tests" / "test_pricing.py").write_text(TEST_PRICING)
    return tmp_path


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _pytest(root: Path, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(root / "src"), PYTHONDONTWRITEBYTECODE="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    return run.stdout + run.stderr


def _buggy(tmp_path: Path) -> Path:
    return _repo(tmp_path, KEYS.replace(KEYS[KEYS.index("def typedkey"):], BUGGY_TYPEDKEY))


@pytest.mark.parametrize("tb", ["long", "short", "auto", "native"])
def test_the_function_under_test_is_found_when_the_traceback_ends_in_the_test(tmp_path, tb):
    root = _buggy(tmp_path)
    output = _pytest(root, f"--tb={tb}", "tests/test_keys.py")
    assert "src/shop/keys.py" not in output  # the traceback never names the buggy module
    found = context.find_context(root, [output], _files(root))
    assert ("tests/test_keys.py", "test_typedkey") in found.failing_tests
    by_label = {p.label: p for p in found.parts}
    under_test = [p for p in found.parts if p.path == "src/shop/keys.py"]
    assert under_test, by_label
    assert any("def typedkey(*args, **kwargs):" in p.text and "return key" in p.text for p in under_test)
    assert under_test[0].value == context.CODE_UNDER_TEST
    test_parts = [p for p in found.parts if p.path == "tests/test_keys.py"]
    # the failing test function, not the whole 120-line test file
    assert any(p.text.startswith("def test_typedkey():") for p in test_parts)
    assert not any("test_filler_20" in p.text for p in test_parts if p.kind != "outline")
    # the code under test ranks above the test
    assert min(p.value for p in under_test) < min(p.value for p in test_parts)


def test_a_long_module_is_shown_as_the_enclosing_function_and_an_outline(tmp_path):
    root = _repo(tmp_path)
    output = _pytest(root, "tests/test_pricing.py")
    lines = (root / "src/shop/pricing.py").read_text().splitlines()
    assert len(lines) > 1000
    bug_line = next(n for n, t in enumerate(lines, 1) if "/ 0" in t)
    found = context.find_context(root, [output], _files(root))
    assert ("src/shop/pricing.py", bug_line) in [(loc.path, loc.line) for loc in found.locations]
    parts = [p for p in found.parts if p.path == "src/shop/pricing.py"]
    shown = [p for p in parts if p.kind == "lines"]
    assert shown and shown[0].text.startswith("def discount(price, percent):")
    assert shown[0].label == f"src/shop/pricing.py lines {shown[0].start}-{shown[0].end} of {len(lines):,}"
    assert not any(p.kind == "whole" for p in parts) and "src/shop/pricing.py" not in found.wholes
    assert not any(p.start == 1 and p.kind == "lines" for p in parts)  # never the head of the file
    outline = next(p for p in parts if p.kind == "outline")
    assert f"{bug_line - 4:>5}: def discount(price, percent):" in outline.text.splitlines()
    assert "def helper_3(value):" in outline.text and "value = value + 3" not in outline.text
    # `total`, which the test calls, is found through its import, the enclosing function of the frame too
    assert any(p.text.startswith("def total(") for p in shown)


def test_attribute_calls_and_reexports_resolve(tmp_path):
    root = _repo(tmp_path)
    (root / "tests" / "test_reexport.py").write_text(textwrap.dedent('''\
        import shop


        def test_total_via_package():
            assert shop.total([10], percent=10) == 9
        '''))
    files = context._Files(root, _files(root))
    tree = files.tree("tests/test_reexport.py")
    found = context.python_definitions(files, "tests/test_reexport.py", tree)
    assert [(path, node.name) for path, node in found] == [("src/shop/pricing.py", "total")]


def test_methods_of_classes_the_test_uses_are_found(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "box.py").write_text(textwrap.dedent('''\
        class Box:
            def __init__(self):
                self.items = []

            def put(self, item):
                self.items.append(item)

            def count(self):
                return len(self.items) - 1
        '''))
    (tmp_path / "test_box.py").write_text(textwrap.dedent('''\
        from pkg.box import Box


        def test_count():
            box = Box()
            box.put(1)
            assert box.count() == 1
        '''))
    files = context._Files(tmp_path, ["pkg/__init__.py", "pkg/box.py", "test_box.py"])
    node = context._find_def(files, "test_box.py", "test_count")
    names = [n.name for _, n in context.python_definitions(files, "test_box.py", node)]
    assert names[0] == "Box" and {"put", "count"} <= set(names)


def test_generic_path_line_references_and_symbol_search(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "src" / "math.js").write_text(
        "function helper(a) {\n  return a;\n}\n\nfunction add(a, b) {\n  return a - b;\n}\n\n"
        "module.exports = { add };\n")
    (tmp_path / "test" / "math.test.js").write_text(
        "const { add } = require('../src/math');\n\ntest('adds', () => {\n  expect(add(1, 2)).toBe(3);\n});\n")
    output = (f"FAIL test/math.test.js\n  ● adds\n    expect(received).toBe(expected)\n"
              f"      at Object.<anonymous> ({tmp_path}/test/math.test.js:4:19)\n")
    found = context.find_context(tmp_path, [output], ["src/math.js", "test/math.test.js"])
    assert ("test/math.test.js", 4) in [(loc.path, loc.line) for loc in found.locations]
    add = [p for p in found.parts if p.path == "src/math.js"]
    assert add and add[0].text.startswith("function add(a, b) {") and add[0].text.endswith("}")


def test_installed_copies_map_back_to_the_repository(tmp_path):
    files = context._Files(tmp_path, ["src/shop/keys.py", "tests/test_keys.py"])
    assert files.resolve("/usr/lib/python3/site-packages/shop/keys.py") == "src/shop/keys.py"
    assert files.resolve(f"{tmp_path}/tests/test_keys.py") == "tests/test_keys.py"
    assert files.resolve("other/thing.py") is None


# -- the budget -----------------------------------------------------------------------------------------
def test_the_first_prompt_stays_under_its_cap_in_order_of_value(tmp_path):
    root = _buggy(tmp_path)
    output = _pytest(root, "tests/test_keys.py", "tests/test_pricing.py")
    found = context.find_context(root, [output], _files(root))
    fixed = "system prompt " * 100
    uncapped = budget.fill(found.parts, [output], _files(root), fixed=fixed, wholes=found.wholes)
    capped = budget.fill(found.parts, [output], _files(root), fixed=fixed, cap=1100, wholes=found.wholes)
    assert uncapped.tokens > 1100 >= capped.tokens
    shown = {p.path for p in capped.parts}
    assert "src/shop/keys.py" in shown  # the code under test made it in
    kept = {p.label for p in capped.parts}
    whole = {p.path for p in capped.parts if p.kind == "whole"}
    left = [p for p in found.parts if p.label not in kept and p.path not in whole]
    assert left and all(p.value >= context.TEST_FUNCTION for p in left)  # tests and outlines go first
    assert "E       assert" in capped.outputs[0] or "AssertionError" in capped.outputs[0]
    assert "test session starts" not in capped.outputs[0]
    from agentloop.run.opening import partial_of

    assert "tests/test_keys.py" in partial_of(capped.parts) or "tests/test_keys.py" not in shown


def test_a_tiny_cap_keeps_the_assertion_before_anything_else(tmp_path):
    root = _buggy(tmp_path)
    output = _pytest(root, "tests/test_keys.py")
    found = context.find_context(root, [output], _files(root))
    filled = budget.fill(found.parts, [output], _files(root), cap=150, wholes=found.wholes)
    assert "assert" in filled.outputs[0]
    assert filled.file_list == "" or len(filled.file_list.splitlines()) < len(_files(root))


def test_trim_output_keeps_the_error_lines():
    output = "\n".join([f"noise line {n}" for n in range(400)] +
                       ["E       AssertionError: boom", "tests/test_x.py:3: AssertionError"])
    trimmed = budget.trim_output(output, 60)
    assert budget.estimate_tokens(trimmed) <= 75
    assert "E       AssertionError: boom" in trimmed and "tests/test_x.py:3: AssertionError" in trimmed
    assert "left out" in trimmed


# -- end to end: `agentloop fix` through the fake HTTP model server ---------------------------------------
def test_fix_shows_the_code_under_test_in_the_first_prompt(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner
    from conftest import PYTEST, make_repo
    from fake_llm import FakeLLM

    from agentloop.cli import cli
    from agentloop.record.trajectory import read_events

    buggy = KEYS.replace(KEYS[KEYS.index("def typedkey"):], BUGGY_TYPEDKEY)
    repo = make_repo(tmp_path / "repo", {"shop/__init__.py": "", "shop/keys.py": buggy,
                                         "shop/pricing.py": _big_module(), "tests/test_keys.py": TEST_KEYS})
    fixed_file = "shop/keys.py\n```python\n" + KEYS + "```\n"
    monkeypatch.chdir(repo)
    # A small local model: models.yaml caps its first prompt at 1,500 tokens.
    with FakeLLM([{"content": fixed_file}]) as server:
        result = CliRunner().invoke(cli, ["fix", "-m", "openai/qwen2.5-coder-1.5b-instruct", "--api-base",
                                          server.api_base, "--json", "--check", f"{PYTEST} tests"],
                                    catch_exceptions=False)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["outcome"] == "accepted", result.stderr
    first = server.requests[0]["messages"]
    user = first[1]["content"]
    (tmp_path / "first_prompt.txt").write_text(first[0]["content"] + user)
    assert "def typedkey(*args, **kwargs):" in user  # the code under test, never named by the traceback
    assert "shop/keys.py" not in "".join(e["output"] for e in read_events(Path(summary["trajectory"]))
                                          if e["type"] == "check" and e["turn"] == 0)
    assert "def test_typedkey():" in user and "assert 20 == 20" not in user  # the test, not its file
    assert "tests/test_keys.py lines 14-18 of 142" in user
    prompt = next(e for e in read_events(Path(summary["trajectory"])) if e["type"] == "prompt")
    assert prompt["estimated_tokens"] <= 1500
    assert prompt["estimated_tokens"] == budget.estimate_tokens(first[0]["content"] + user)
    assert "tests/test_keys.py" in prompt["partial"] and "shop/keys.py" not in prompt["partial"]
    saved = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert saved["first_prompt_tokens"] == 100  # the fake server's count of the first call's prompt
    assert saved["first_prompt_estimate"] == prompt["estimated_tokens"]
    assert "(first prompt 100)" in result.stderr


def test_after_an_edit_a_long_file_is_shown_around_the_change(tmp_path):
    from agentloop.run import opening

    root = _repo(tmp_path)
    lines = (root / "src/shop/pricing.py").read_text().splitlines()
    bug = next(n for n, t in enumerate(lines, 1) if "/ 0" in t)
    diff = (f"diff --git a/src/shop/pricing.py b/src/shop/pricing.py\n--- a/src/shop/pricing.py\n"
            f"+++ b/src/shop/pricing.py\n@@ -{bug - 3},7 +{bug - 3},7 @@ def discount(price, percent):\n")
    partial: dict[str, str] = {}
    shown = opening.changed_files(root, ["src/shop/pricing.py", "src/shop/keys.py"], diff, partial)
    titles = [f.title for f in shown]
    assert titles[0].startswith("src/shop/pricing.py lines ") and shown[0].content.startswith("def discount(")
    assert titles[1].startswith("src/shop/pricing.py: outline")
    assert shown[2].path == "src/shop/keys.py" and shown[2].title == "" and shown[2].content.rstrip() == KEYS.rstrip()
    assert list(partial) == ["src/shop/pricing.py"]
    opening.read_whole(partial, "src/shop/pricing.py", "src/shop/pricing.py (lines 1-400 of 1070)\n...")
    assert "src/shop/pricing.py" in partial  # read in part: still partial
    opening.read_whole(partial, "src/shop/pricing.py", "src/shop/pricing.py (lines 1-1070 of 1070)\n...")
    assert partial == {}


def test_models_yaml_caps_the_small_qwen_coders_only():
    from agentloop.run import rules

    assert rules.first_prompt_tokens("openai/qwen2.5-coder-1.5b-instruct") == 1500
    assert rules.first_prompt_tokens("gpt-4.1-mini") is None


def test_a_long_file_named_with_file_is_outlined_not_cut(tmp_path):
    root = _repo(tmp_path)
    found = context.find_context(root, [], _files(root), given=["src/shop/pricing.py", "src/shop/keys.py"])
    kinds = [(p.path, p.kind) for p in found.parts]
    assert kinds == [("src/shop/pricing.py", "outline"), ("src/shop/keys.py", "whole")]
    outline = found.parts[0].text
    assert " 1068: def total(prices, percent=0):" in outline and "more definitions, lines " in outline
    assert "TAX = 0.2" not in outline and len(outline.splitlines()) <= context.MAX_OUTLINE_ROWS


def test_a_long_class_shows_its_head_and_the_methods_used(tmp_path):
    body = "".join(f"    def method_{n}(self):\n        return {n}\n\n" for n in range(60))
    (tmp_path / "big.py").write_text("class Big:\n    \"\"\"Many methods.\"\"\"\n\n    limit = 3\n\n" + body
                                     + "    def wanted(self):\n        return -1\n")
    (tmp_path / "test_big.py").write_text("from big import Big\n\n\ndef test_wanted():\n"
                                          "    assert Big().wanted() == 1\n")
    output = ("test_big.py:5: in test_wanted\n    assert Big().wanted() == 1\nE   assert -1 == 1\n"
              "FAILED test_big.py::test_wanted - assert -1 == 1\n")
    found = context.find_context(tmp_path, [output], ["big.py", "test_big.py"])
    shown = [p for p in found.parts if p.path == "big.py" and p.kind == "lines"]
    assert shown[0].text.startswith("class Big:") and "limit = 3" in shown[0].text
    assert "def method_0" not in shown[0].text  # the head only: no first 80 lines of the class
    assert any(p.text.startswith("    def wanted(self):") for p in shown)  # as indented in the file
    assert any(p.kind == "outline" for p in found.parts if p.path == "big.py")


def test_a_symlink_out_of_the_shared_files_is_never_shown(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("def leaked():\n    return 'TOKEN-123'\n")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "private.py").write_text("def private():\n    return 'PRIVATE-456'\n")
    (root / "link_out.py").symlink_to(outside / "secret.py")
    (root / "link_private.py").symlink_to(root / "private.py")
    output = "link_out.py:2: in leaked\nlink_private.py:2: in private\nE   boom\n"
    found = context.find_context(root, [output], ["link_out.py", "link_private.py"], given=["link_out.py"])
    text = "".join(p.text for p in found.parts) + "".join(p.text for p in found.wholes.values())
    assert "TOKEN-123" not in text and "PRIVATE-456" not in text


def test_the_rendered_first_prompt_never_passes_its_cap(tmp_path):
    """The cap holds for the prompt as sent (templates, headings and all), whatever the cap: the fill's
    part-by-part count is an estimate of its own, so the rendered text is what is measured."""
    from agentloop.run import opening
    from agentloop.workspace.checks import CommandResult

    root = _buggy(tmp_path)
    output = _pytest(root, "tests/test_keys.py", "tests/test_pricing.py")
    # a long command line, digits and all, as a CI machine's virtualenv gives: it is shown too
    command = "/check/work/main-296/.venv/bin/python -m pytest -q -p no:cacheprovider tests"
    failing = CommandResult(command=command, exit_code=1, output=output, duration_s=0.1)
    over = []
    for cap in range(1100, 1700, 3):
        built = opening.build(root, "Make the tests pass.", [failing], _files(root), [],
                              lambda path: "You fix code. Reply with whole files. " * 20, cap)
        if built.estimated_tokens > cap:
            over.append((cap, built.estimated_tokens))
    assert not over


def test_files_that_do_not_parse_or_read_as_text_never_raise(tmp_path):
    """Odd files the failing output names (nesting too deep for `ast`, non-UTF-8 bytes, a NUL after
    git's binary sniff) are shown as text or left out; the context finder never raises on them."""
    (tmp_path / "deep.py").write_text("x = 1" + " + 1" * 100_000 + "\n")
    (tmp_path / "latin.py").write_bytes(b"def f():\n    return '\xe9t\xe9'\n")
    (tmp_path / "late_nul.py").write_bytes(b"def g():\n    return 1\n" + b"#" * 9000 + b"\0\n")
    output = "deep.py:1: in <module>\nlatin.py:2: in f\nlate_nul.py:2: in g\nE   boom\n"
    found = context.find_context(tmp_path, [output], ["deep.py", "latin.py", "late_nul.py"])
    assert {p.path for p in found.parts} >= {"latin.py", "late_nul.py"}


def test_a_fifo_or_a_huge_file_named_by_the_output_is_left_out(tmp_path):
    """A check may leave a FIFO where a tracked file was (reading it would wait forever), or a file of
    gigabytes: neither is read."""
    import threading

    os.mkfifo(tmp_path / "pipe.py")
    with open(tmp_path / "huge.py", "w") as fh:
        fh.write("def big():\n    return 1\n")
        fh.write("# filler\n" * (context.MAX_FILE_BYTES // 9 + 10))
    output = "pipe.py:1: in f\nhuge.py:2: in big\nE   boom\n"
    result: list[context.Finding] = []
    worker = threading.Thread(target=lambda: result.append(
        context.find_context(tmp_path, [output], ["pipe.py", "huge.py"])), daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # unblock the reader so the test process can end
        with open(tmp_path / "pipe.py", "w"):
            pass
    assert result, "find_context blocked on a FIFO"
    assert not result[0].parts and not result[0].wholes


def test_line_numbers_count_newlines_as_python_does(tmp_path):
    """A form feed (or another character `str.splitlines` breaks at) is not a line break to Python: the
    line a traceback names is the line shown."""
    source = "import os\n\x0c\ndef first():\n    return 1\n\x0c\n\ndef second():\n    raise ValueError('here')\n"
    (tmp_path / "ff.py").write_text(source)
    output = 'Traceback (most recent call last):\n  File "ff.py", line 8, in second\nValueError: here\n'
    found = context.find_context(tmp_path, [output], ["ff.py"])
    assert found.locations == [context.Location("ff.py", 8, "second")]
    whole = found.wholes["ff.py"]
    assert whole.total == 8 and whole.text.split("\n")[7] == "    raise ValueError('here')"
    assert any(p.kind == "lines" and p.text.startswith("def second") for p in found.parts)


def test_the_format_example_never_quotes_a_file_through_a_symlink_out(tmp_path):
    """A check may turn a file the model was shown into a symlink to a credentials file; the format
    example, which quotes a file's first line, then falls back to its made-up line."""
    from agentloop.run import feedback

    (tmp_path / "netrc").write_text("machine api.example.com login me password TOKEN-789\n")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "app.py").symlink_to(tmp_path / "netrc")
    os.mkfifo(root / "pipe.py")
    for name in ("app.py", "pipe.py"):
        values = feedback.example_values(name, root)
        assert "TOKEN-789" not in values["example_search"] and values["example_line"] == 1
    (root / "real.py").write_text("\nimport os\n")
    assert feedback.example_values("real.py", root)["example_search"] == "import os"


def test_a_long_unbroken_line_in_the_output_is_read_in_one_pass(tmp_path):
    """Check output is written by the model's code: a long run of path-like characters (a base64 blob,
    minified code) must not make the `path:line` search try every start inside it (quadratic: minutes
    for a few hundred kilobytes)."""
    import threading

    (tmp_path / "m.py").write_text("def f():\n    return 1\n")
    output = "E   " + "a." * 150_000 + "\nm.py:2: in f\n"
    result: list[list[context.Location]] = []
    worker = threading.Thread(target=lambda: result.append(
        context.traceback_locations([output], context._Files(tmp_path, ["m.py"]))), daemon=True)
    worker.start()
    worker.join(timeout=60)  # a hang guard, not a speed target: one pass takes milliseconds
    assert result and result[0] == [context.Location("m.py", 2, "f")]


def test_the_format_example_never_quotes_a_test_file(tmp_path):
    """six's test looks the buggy function up with getattr: only the test file is found, and the format
    example quoted it, so the model rewrote the (protected) test three times. A source file is quoted."""
    from agentloop.run import opening
    from agentloop.workspace.checks import CommandResult

    root = tmp_path / "repo"
    root.mkdir()
    (root / "six.py").write_text("def iteritems(d):\n    return iter(d.values())\n")
    (root / "test_six.py").write_text(
        "import six\n\n\ndef test_iterators():\n    meth = getattr(six, 'iter' + 'items')\n"
        "    assert list(meth({1: 2})) == [(1, 2)]\n")
    output = ("    def test_iterators():\n        meth = getattr(six, 'iter' + 'items')\n"
              ">       assert list(meth({1: 2})) == [(1, 2)]\nE       assert [2] == [(1, 2)]\n\n"
              "test_six.py:6: AssertionError\n")
    failing = CommandResult(command="python -m pytest -q", exit_code=1, output=output, duration_s=0.1)
    # (a task text naming `six.iteritems` now finds it: tests/test_real_task_prompts.py; this one names nothing)
    built = opening.build(root, "The dictionary iterators must iterate over the pairs.", [failing],
                          ["LICENSE", "six.py", "test_six.py"], [], lambda path: f"example from {path}", 1500)
    assert built.files == ["test_six.py"]  # what the finding gives (the call is dynamic)
    assert built.example_path == "six.py" and "example from six.py" in built.system


def test_a_part_inside_a_larger_part_of_the_same_file_is_shown_once(tmp_path):
    """cachetools_lru: LRUCache.__getitem__ (from the traceback) and then the whole LRUCache class (used by
    the test) were both shown, the method's lines twice."""
    from agentloop.run.context import Part, _absorbed

    method = Part("c.py", "lines", 209, 213, 859, "m", value=1, focus=210)
    klass = Part("c.py", "lines", 202, 236, 859, "k", value=3)
    other = Part("c.py", "lines", 65, 69, 859, "o", value=2)
    kept = _absorbed([method, other, klass])
    assert kept == [other, klass]
    assert (klass.value, klass.focus) == (1, 210)
