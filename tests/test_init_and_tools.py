"""`agentloop init` detection, and the read-only tools the model may call."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner
from conftest import make_repo

from agentloop.cli import cli
from agentloop.config import load_config
from agentloop.run.model import ToolCall
from agentloop.run.toolbox import Toolbox, load_tool_specs, text_tool_calls
from agentloop.workspace.repo import Workspace


def test_init_detects_checks_and_writes_valid_config(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "r", {
        "test_x.py": "def test_x():\n    pass\n",
        "package.json": json.dumps({"scripts": {"test": "jest"}}),
        "go.mod": "module x\n",
        "Makefile": "test:\n\techo ok\n",
    })
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, ["init"])
    assert result.exit_code == 0, result.output
    config = load_config(repo, environ={})
    assert [c.run for c in config.checks] == ["python -m pytest -q", "npm test", "go test ./...", "make test"]
    assert "npm test" in result.output
    again = CliRunner().invoke(cli, ["init"])
    assert again.exit_code == 2 and "--force" in again.stderr


def test_init_with_nothing_detected(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "r", {"README": "hi\n"})
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, ["init"])
    assert result.exit_code == 0 and "no test runner detected" in result.output
    assert yaml.safe_load((repo / ".agentloop.yaml").read_text())["checks"] in (None, [])
    assert load_config(repo, environ={}).checks == ()


def test_init_outside_git(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["init"])
    assert result.exit_code == 2 and "not inside a git repository" in result.stderr


def _toolbox(tmp_path):
    repo = make_repo(tmp_path / "r", {"src/app.py": "".join(f"line {i}\n" for i in range(1, 501)),
                                      "README.md": "hello world\n"})
    (tmp_path / "outside.txt").write_text("secret outside\n")
    (repo / "link.txt").symlink_to(tmp_path / "outside.txt")
    return Toolbox(repo, Workspace(repo).list_files)


def call(name, **args):
    return ToolCall(id="c1", name=name, arguments=json.dumps(args))


def test_read_file_ranges_and_limits(tmp_path):
    box = _toolbox(tmp_path)
    answer = box.answer(call("read_file", path="src/app.py", start_line=10, end_line=12))
    assert answer.ok and "   10 line 10" in answer.output and "line 13" not in answer.output
    whole = box.answer(call("read_file", path="src/app.py")).output
    assert "line 400" in whole and "line 401" not in whole and "not shown" in whole


def test_tools_cannot_escape_or_read_git(tmp_path):
    box = _toolbox(tmp_path)
    for path in ("../outside.txt", "/etc/passwd", "link.txt", ".git/config", ".git/HEAD"):
        answer = box.answer(call("read_file", path=path))
        assert not answer.ok, path
        assert "secret outside" not in answer.output
    assert not box.answer(call("list_files", path="..")).ok


def test_list_and_search(tmp_path):
    box = _toolbox(tmp_path)
    assert box.answer(call("list_files", pattern="*.py")).output == "src/app.py"
    hits = box.answer(call("search", pattern=r"^line 42$")).output
    assert hits == "src/app.py:42: line 42"
    assert not box.answer(call("search", pattern="(")).ok  # bad regex: an error the model can read
    assert not box.answer(call("rm_rf", path=".")).ok


def test_read_and_search_number_lines_as_tracebacks_do_and_refuse_huge_files(tmp_path):
    """A form feed or U+2028 inside a line does not shift the numbers (tracebacks count \\n only), and a
    file of more than 4 MB is neither read whole into the prompt nor searched."""
    repo = make_repo(tmp_path / "r", {"m.py": "import os\n\x0c\ns = 'a\u2028b'\ndef target():\n    return 1\n"})
    (repo / "dump.log").write_text("needle\n" * 700_000)  # about 4.9 MB
    box = Toolbox(repo, Workspace(repo).list_files)
    read = box.answer(call("read_file", path="m.py")).output
    assert "    4 def target():" in read and "of 5)" in read
    assert "m.py:4: def target():" in box.answer(call("search", pattern="def target")).output
    huge = box.answer(call("read_file", path="dump.log"))
    assert not huge.ok and "not a regular file of at most 4 MB" in huge.output
    assert box.answer(call("search", pattern="needle")).output == "(no matches)"


def test_a_runaway_search_pattern_is_stopped_with_a_reason(tmp_path, monkeypatch):
    """(a+)+$ against a line of 40 a's and a b backtracks for hours; Python's re cannot be stopped, so
    the search runs in a child that is killed past its time, and the turn goes on."""
    import time

    from agentloop.run import toolbox

    monkeypatch.setattr(toolbox, "SEARCH_SECONDS", 1.0)
    repo = make_repo(tmp_path / "r", {"m.py": "x = '" + "a" * 40 + "b'\n", "n.py": "needle = 1\n"})
    box = Toolbox(repo, Workspace(repo).list_files)
    started = time.monotonic()
    stuck = box.answer(call("search", pattern="(a+)+$"))
    assert not stuck.ok and "took longer than 1s" in stuck.output
    assert time.monotonic() - started < 30
    assert box.answer(call("search", pattern="needle")).output == "n.py:1: needle = 1"  # and searching still works
    outside = box.answer(call("search", pattern="x", path="../"))
    assert not outside.ok and "outside the repository" in outside.output


def test_tool_specs_are_valid_function_definitions():
    names = {s["function"]["name"] for s in load_tool_specs()}
    assert names == {"read_file", "list_files", "search", "give_up"}
    for spec in load_tool_specs():
        assert spec["type"] == "function"
        assert spec["function"]["parameters"]["type"] == "object"


def test_text_tool_calls_from_local_models():
    content = 'Let me look.\n<tool_call>\n{"name": "read_file", "arguments": {"path": "a.py"}}\n</tool_call>'
    calls = text_tool_calls(content)
    assert [(c.name, c.parsed_arguments()) for c in calls] == [("read_file", {"path": "a.py"})]
    assert text_tool_calls("<tool_call>{not json}</tool_call>") == []
