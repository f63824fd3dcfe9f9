"""The function-level edit format (`path::name` + the whole new definition), and whole-file replies
to files the model saw only in part."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentloop.edits import apply_reply, parse_edits, render_failures

MODULE = '''\
"""Shapes."""

import functools


def area(w, h):
    return w + h  # bug


class Box:
    """A box."""

    def __init__(self, w, h):
        self.w, self.h = w, h

    @functools.cache
    def volume(self, d):
        return self.w * self.h

    def label(self):
        return "box"


class Crate(Box):
    def label(self):
        return "crate"


def perimeter(w, h):
    return 2 * (w + h)
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "shapes.py").write_text(MODULE)
    (tmp_path / "app.js").write_text("function area(w, h) {\n  return w + h;\n}\n")
    return tmp_path


def reply(header: str, code: str) -> str:
    return f"Fixing it.\n\n{header}\n```python\n{code}```\n"


def test_a_top_level_function_is_replaced_by_name(repo):
    result = apply_reply(repo, reply("shapes.py::area", "def area(w, h):\n    return w * h\n"))
    assert result.applied, render_failures(result)
    text = (repo / "shapes.py").read_text()
    assert "    return w * h\n" in text and "w + h  # bug" not in text
    assert text.replace("    return w * h\n", "    return w + h  # bug\n") == MODULE  # nothing else changed
    assert result.edits[0].format == "function" and result.edits[0].kind == "function"


def test_a_method_is_reindented_and_its_decorators_kept(repo):
    code = "def volume(self, d):\n    return self.w * self.h * d\n"
    result = apply_reply(repo, reply("shapes.py::Box.volume", code))
    assert result.applied, render_failures(result)
    text = (repo / "shapes.py").read_text()
    assert "    @functools.cache\n    def volume(self, d):\n        return self.w * self.h * d\n" in text


def test_decorators_written_replace_the_old_ones(repo):
    code = "    @staticmethod\n    def volume(self, d):\n        return 0\n"  # indented as in the class
    result = apply_reply(repo, reply("shapes.py::Box.volume", code))
    assert result.applied, render_failures(result)
    text = (repo / "shapes.py").read_text()
    assert "functools.cache" not in text and "    @staticmethod\n    def volume(self, d):\n        return 0\n" in text


def test_a_class_is_replaced_whole(repo):
    code = "class Crate(Box):\n    def label(self):\n        return 'CRATE'\n"
    assert apply_reply(repo, reply("shapes.py::Crate", code)).applied
    assert "return 'CRATE'" in (repo / "shapes.py").read_text()


def test_a_method_named_alone_when_only_one_class_has_it(repo):
    result = apply_reply(repo, reply("shapes.py::volume", "def volume(self, d):\n    return 1\n"))
    assert result.applied, render_failures(result)


@pytest.mark.parametrize(("header", "code", "reason", "words"), [
    ("shapes.py::label", "def label(self):\n    return 'x'\n", "ambiguous", "Box.label, Crate.label"),
    ("shapes.py::aera", "def aera(w, h):\n    return 1\n", "not_found", "did you mean area"),
    ("shapes.py::area", "def perimeter(w, h):\n    return 1\n", "malformed", "defines 'perimeter', not 'area'"),
    ("shapes.py::area", "def area(w, h):\n    return (\n", "malformed", "does not parse"),
    ("shapes.py::area", "def area(w, h):\n    # ... rest of the code unchanged\n    return 1\n", "malformed",
     "leaves code out"),
    ("shapes.py::area", "def area(w, h):\n    return w + h  # bug\n", "already_applied", "changes nothing"),
    ("app.js::area", "function area(w, h) {\n  return w * h;\n}\n", "malformed", "use a SEARCH/REPLACE block"),
    ("missing.py::area", "def area():\n    pass\n", "not_found", "does not exist"),
])
def test_refusals_say_why(repo, header, code, reason, words):
    result = apply_reply(repo, reply(header, code))
    assert not result.applied
    assert result.failures[0].reason == reason
    assert words in result.failures[0].message
    assert (repo / "shapes.py").read_text() == MODULE


def test_a_duplicated_definition_is_ambiguous(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    return 1\n\n\ndef f():\n    return 2\n\n\ndef g():\n    pass\n")
    result = apply_reply(tmp_path, reply("m.py::f", "def f():\n    return 3\n"))
    assert result.failures[0].reason == "ambiguous" and "lines 1, 5" in result.failures[0].message


def test_header_variants_parse():
    for header in ("shapes.py::area", "**shapes.py::area**", "`shapes.py::area`", "# shapes.py::area",
                   "shapes.py::area()", "File: shapes.py::area:"):
        edits = parse_edits(reply(header, "def area(w, h):\n    return 1\n"), known_files=["shapes.py"])
        assert [(e.kind, e.path, e.search) for e in edits] == [("function", "shapes.py", "area")], header
    edits = parse_edits("```python\n# shapes.py::area\ndef area(w, h):\n    return 1\n```\n")
    assert [(e.kind, e.path, e.search, e.replace) for e in edits] == [
        ("function", "shapes.py", "area", "def area(w, h):\n    return 1\n")]
    edits = parse_edits("```python shapes.py::Box.volume\ndef volume(self, d):\n    return 1\n```\n")
    assert [(e.kind, e.path, e.search) for e in edits] == [("function", "shapes.py", "Box.volume")]


def test_several_definitions_in_one_reply_apply_together(repo):
    text = (reply("shapes.py::area", "def area(w, h):\n    return w * h\n")
            + reply("shapes.py::Crate.label", "def label(self):\n    return 'CRATE'\n"))
    result = apply_reply(repo, text)
    assert result.applied, render_failures(result)
    new = (repo / "shapes.py").read_text()
    assert "return w * h" in new and "        return 'CRATE'\n" in new and "return \"box\"" in new


def test_a_docstring_holding_a_fence_does_not_end_the_block(repo):
    """humanize's naturalsize has a ```pycon example in its docstring: its indented closing fence is code,
    not the end of the reply's block (the suite's model rewrote it three times, each cut there)."""
    code = ('def area(w, h):\n    """Area.\n\n    ```pycon\n    >>> area(2, 3)\n    6\n    ```\n    """\n'
            "    return w * h\n")
    result = apply_reply(repo, reply("shapes.py::area", code))
    assert result.applied, render_failures(result)
    assert "    ```pycon\n" in (repo / "shapes.py").read_text() and "return w * h" in (repo / "shapes.py").read_text()


def test_a_cut_short_block_is_malformed(repo):
    result = apply_reply(repo, "shapes.py::area\n```python\ndef area(w, h):\n    return w * h\n")
    assert result.failures and result.failures[0].reason == "malformed"


# -- whole-file blocks ---------------------------------------------------------------------------------
def test_a_whole_file_reply_for_a_file_shown_in_part_is_refused(repo):
    new = MODULE.replace("w + h  # bug", "w * h")
    partial = {"shapes.py": "lines 6-7 of 40"}
    result = apply_reply(repo, f"shapes.py\n```python\n{new}```\n", partial=partial)
    assert not result.applied
    assert result.failures[0].reason == "malformed"
    assert "shown only part of shapes.py (lines 6-7 of 40)" in result.failures[0].message
    assert (repo / "shapes.py").read_text() == MODULE
    # the same reply, for a file shown whole, applies
    assert apply_reply(repo, f"shapes.py\n```python\n{new}```\n").applied


def test_a_whole_file_block_holding_only_a_definition_replaces_that_definition(repo):
    """A model asked for the function writes it under the plain path: it is not the new file."""
    result = apply_reply(repo, "shapes.py\n```python\ndef area(w, h):\n    return w * h\n```\n",
                         partial={"shapes.py": "lines 6-7 of 40"})
    assert result.applied, render_failures(result)
    assert (repo / "shapes.py").read_text() == MODULE.replace("w + h  # bug", "w * h")
    assert any("taken as the replacement" in note for note in result.notes)


def test_a_file_that_is_only_that_definition_is_still_written_whole(tmp_path):
    (tmp_path / "one.py").write_text("def f():\n    return 1\n")
    result = apply_reply(tmp_path, "one.py\n```python\ndef f():\n    return 2\n```\n")
    assert result.applied and (tmp_path / "one.py").read_text() == "def f():\n    return 2\n"


# -- in a run: `agentloop fix` through the fake HTTP model server ------------------------------------------
def _fix(repo: Path, server, *args: str, monkeypatch) -> tuple[dict, str]:
    import json

    from click.testing import CliRunner

    from agentloop.cli import cli

    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, ["fix", "--api-base", server.api_base, "--json", *args],
                                catch_exceptions=False)
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def _pricing_repo(tmp_path: Path) -> tuple[Path, str]:
    from conftest import make_repo
    from test_context import TEST_PRICING, _big_module

    big = _big_module()
    return make_repo(tmp_path / "repo", {"shop/__init__.py": "", "shop/pricing.py": big,
                                         "tests/test_pricing.py": TEST_PRICING}), big


FIXED_DISCOUNT = '''def discount(price, percent):
    """The price after a percentage discount."""
    if percent < 0:
        raise ValueError('negative discount')
    return price - price * percent / 100
'''


def test_a_whole_file_reply_to_a_file_shown_in_part_is_refused_in_a_run(tmp_path, monkeypatch):
    from conftest import PYTEST
    from fake_llm import FakeLLM

    repo, big = _pricing_repo(tmp_path)
    whole = "shop/pricing.py\n```python\n" + big.replace("/ 0  # the bug: / 100", "/ 100") + "```\n"
    by_name = "shop/pricing.py::discount\n```python\n" + FIXED_DISCOUNT + "```\n"
    with FakeLLM([{"content": whole}, {"content": by_name}]) as server:
        summary, err = _fix(repo, server, "-m", "openai/qwen2.5-coder-1.5b-instruct", "--check", f"{PYTEST} tests",
                            monkeypatch=monkeypatch)
    assert summary["outcome"] == "accepted", err
    assert summary["turns"] == 2
    first_user = server.requests[0]["messages"][1]["content"]
    assert "shop/pricing.py lines " in first_user and " of 1,070" in first_user  # shown in part, with numbers
    assert "value = value + 3\n" not in first_user  # ... never the head of the file
    # The small Qwen coders' fresh_retry: the first prompt again, and the refusal, not the refused reply.
    assert server.requests[1]["messages"][:-1] == server.requests[0]["messages"]
    refusal = server.requests[1]["messages"][-1]["content"]
    assert "shown only part of shop/pricing.py (lines " in refusal
    assert (repo / "shop/pricing.py").read_text() == big.replace("/ 0  # the bug: / 100", "/ 100")


def test_the_function_format_end_to_end(tmp_path, monkeypatch):
    from conftest import PYTEST
    from fake_llm import FakeLLM

    repo, big = _pricing_repo(tmp_path)
    with FakeLLM([{"content": "The divisor is wrong.\n\nshop/pricing.py::discount\n```python\n" + FIXED_DISCOUNT
                   + "```\n"}]) as server:
        summary, err = _fix(repo, server, "-m", "openai/fake", "--edit-format", "function", "--check",
                            f"{PYTEST} tests", monkeypatch=monkeypatch)
    assert summary["outcome"] == "accepted", err
    system = server.requests[0]["messages"][0]["content"]
    assert "# Edit format: whole definitions" in system and "shop/pricing.py::" in system
    assert (repo / "shop/pricing.py").read_text() == big.replace("/ 0  # the bug: / 100", "/ 100")


@pytest.mark.parametrize("code", [
    "def area(w, h):\n    return 1" + " + 1" * 100_000 + "\n",  # nesting too deep for ast: RecursionError
    "def area(w, h):\n    return 1  # \0\n",  # a NUL byte: ValueError on Python 3.11
])
def test_new_code_ast_cannot_take_is_refused_not_raised(repo, code):
    result = apply_reply(repo, reply("shapes.py::area", code))
    assert not result.applied and result.failures[0].reason == "malformed"
    assert (repo / "shapes.py").read_text() == MODULE


def test_a_name_defined_twice_means_the_definition_the_model_was_shown(tmp_path):
    """six defines `iteritems` once per Python version; the prompt showed one of them (the file in part):
    the reply rewrites that one, and a reply for a file shown whole stays ambiguous."""
    module = ("if PY3:\n    def iteritems(d):\n        return iter(d.values())\nelse:\n"
              "    def iteritems(d):\n        return d.iteritems()\n")
    (tmp_path / "six.py").write_text(module)
    fix = reply("six.py::iteritems", "def iteritems(d):\n    return iter(d.items())\n")
    assert apply_reply(tmp_path, fix).failures[0].reason == "ambiguous"
    result = apply_reply(tmp_path, fix, partial={"six.py": "lines 2-3 of 6"})
    assert result.applied, render_failures(result)
    assert (tmp_path / "six.py").read_text() == module.replace("iter(d.values())", "iter(d.items())")


def test_a_method_named_alone_means_the_class_whose_signature_the_reply_copies(tmp_path):
    """cachetools: `__getitem__` of Cache and of LRUCache; the reply's `def` line is LRUCache's."""
    module = ("class Cache:\n    def __getitem__(self, key):\n        return self.data[key]\n\n\n"
              "class LRUCache(Cache):\n    def __getitem__(self, key, getitem=Cache.__getitem__):\n"
              "        return getitem(self, key)\n")
    (tmp_path / "c.py").write_text(module)
    code = "def __getitem__(self, key, getitem=Cache.__getitem__):\n    value = getitem(self, key)\n    return value\n"
    result = apply_reply(tmp_path, reply("c.py::__getitem__", code))
    assert result.applied, render_failures(result)
    text = (tmp_path / "c.py").read_text()
    assert "        return self.data[key]\n" in text and "        value = getitem(self, key)\n" in text
    same = reply("c.py::label", "def label(self):\n    return 1\n")  # equal signatures: still a guess
    (tmp_path / "c.py").write_text("class A:\n    def label(self):\n        return 0\n\n\n"
                                   "class B:\n    def label(self):\n        return 2\n")
    assert apply_reply(tmp_path, same).failures[0].reason == "ambiguous"


def test_a_block_that_copies_other_definitions_of_the_file_is_refused(repo):
    """cachetools_typedkey: a block headed `keys.py::hashkey` held the module's imports, its class and
    every function; applied, it put a second copy of the module inside it. A new helper may come along."""
    code = "class Box:\n    pass\n\n\ndef area(w, h):\n    return w * h\n"
    result = apply_reply(repo, reply("shapes.py::area", code))
    assert not result.applied and "also holds Box, which shapes.py already defines" in result.failures[0].message
    assert (repo / "shapes.py").read_text() == MODULE
    helper = "def _product(w, h):\n    return w * h\n\n\ndef area(w, h):\n    return _product(w, h)\n"
    result = apply_reply(repo, reply("shapes.py::area", helper))
    assert result.applied, render_failures(result)
    assert "def _product(w, h):" in (repo / "shapes.py").read_text()
    method = "def volume(self, d):\n    return 1\n\n\ndef label(self):\n    return 'box'\n"  # Box has label
    result = apply_reply(repo, reply("shapes.py::Box.volume", method))
    assert not result.applied and "also holds label" in result.failures[0].message
    helper = "def label(x):\n    return x\n\n\ndef area(w, h):\n    return label(w * h)\n"  # a method's name
    assert apply_reply(repo, reply("shapes.py::area", helper)).applied  # ... is free at the top level


def test_a_header_wrapped_in_its_own_fence_and_run_on_definitions_parse(repo):
    """Qwen2.5-Coder-1.5B on toolz_compose: `path::name` inside a ```python fence of its own, then the
    definition's fence, and the next header before that fence was closed. Read as a whole-file block,
    it was refused (the file was shown in part); it is two definitions."""
    text = ("### Edit 1\n\n```python\nshapes.py::area\n```python\ndef area(w, h):\n    return w * h\n\n"
            "shapes.py::perimeter\n```python\ndef perimeter(w, h):\n    return 2 * w + 2 * h\n```\n\nDone.\n")
    edits = parse_edits(text, known_files=["shapes.py"])
    assert [(e.kind, e.path, e.search) for e in edits] == [("function", "shapes.py", "area"),
                                                           ("function", "shapes.py", "perimeter")]
    assert edits[0].replace == "def area(w, h):\n    return w * h\n\n"
    result = apply_reply(repo, text, known_files=["shapes.py"])
    assert result.applied, render_failures(result)
    assert "return w * h" in (repo / "shapes.py").read_text()
    assert "return 2 * w + 2 * h" in (repo / "shapes.py").read_text()
    # A fence closed inside a docstring's example, then a proper block: nothing is added or dropped.
    fine = ('shapes.py::area\n```python\ndef area(w, h):\n    """Area.\n\n    ```pycon\n    >>> area(2, 3)\n'
            '    6\n    ```\n    """\n    return w * h\n```\n\nshapes.py::perimeter\n```python\n'
            'def perimeter(w, h):\n    return 2 * w + 2 * h\n```\n')
    edits = parse_edits(fine, known_files=["shapes.py"])
    assert [(e.kind, e.search) for e in edits] == [("function", "area"), ("function", "perimeter")]
    assert "    ```\n" in edits[0].replace and edits[1].replace == "def perimeter(w, h):\n    return 2 * w + 2 * h\n"
    # A document quoting the format in a SEARCH/REPLACE block is edited as it is.
    doc = "Write `x.py::name`, then the code:\n\n    x.py::name\n    ```python\n"
    (repo / "GUIDE.md").write_text(doc)
    quoting = ("```markdown\nGUIDE.md\n<<<<<<< SEARCH\n    x.py::name\n    ```python\n=======\n    x.py::name\n"
               "    ```py\n>>>>>>> REPLACE\n```\n")
    result = apply_reply(repo, quoting, known_files=["GUIDE.md"])
    assert result.applied, render_failures(result)
    assert (repo / "GUIDE.md").read_text() == doc.replace("```python", "```py")
