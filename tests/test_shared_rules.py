"""The small shared rules: one outcome type, one atomic write, one binary test, one path-safety core,
and a config table that covers every setting."""

from __future__ import annotations

import json
import os
from dataclasses import fields

import pytest

from agentloop.config import SETTINGS, Config, ConfigError, HookSettings, apply_mapping
from agentloop.errors import EXIT_ERROR, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from agentloop.files import atomic_write, looks_binary, names_git_dir, real_inside
from agentloop.outcome import Outcome


def test_an_outcome_is_its_name_with_its_exit_code_words_and_colour():
    assert json.dumps({"outcome": Outcome.GAVE_UP}) == '{"outcome": "gave_up"}'
    assert Outcome.of("budget_exhausted") is Outcome.BUDGET_EXHAUSTED and Outcome.of("won") is None
    assert [o.exit_code for o in (Outcome.ACCEPTED, Outcome.BUDGET_EXHAUSTED, Outcome.GAVE_UP, Outcome.ERROR,
                                  Outcome.INTERRUPTED)] == [EXIT_OK, EXIT_FAILED, EXIT_FAILED, EXIT_ERROR,
                                                            EXIT_INTERRUPTED]
    assert Outcome.BUDGET_EXHAUSTED.words == "budget exhausted" and Outcome.ACCEPTED.colour == "green"


def test_atomic_write_replaces_whole_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    atomic_write(target, "new", mode=0o755, durable=True)
    assert target.read_text() == "new" and os.stat(target).st_mode & 0o777 == 0o755
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "f.txt", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_write_replaces_a_symlink_rather_than_writing_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (tmp_path / "repo").mkdir()
    link = tmp_path / "repo" / "link.txt"
    link.symlink_to(outside)
    atomic_write(link, "mine")
    assert outside.read_text() == "keep" and not link.is_symlink() and link.read_text() == "mine"


def test_binary_means_a_nul_byte_near_the_start():
    assert looks_binary(b"ab\0cd") and not looks_binary("héllo".encode()) and not looks_binary(b"x" * 9000 + b"\0")


def test_path_core_follows_symlinks_and_sees_git_in_any_case(tmp_path):
    (tmp_path / "repo" / "src").mkdir(parents=True)
    (tmp_path / "repo" / "out").symlink_to(tmp_path)
    assert real_inside(tmp_path / "repo", tmp_path / "repo" / "src" / "a.py").parts == ("src", "a.py")
    assert real_inside(tmp_path / "repo", tmp_path / "repo" / "out" / "a.py") is None
    assert names_git_dir(("sub", ".GIT", "config")) and not names_git_dir(("sub", ".github"))


def test_every_setting_has_one_parser_and_unknown_keys_are_named():
    assert set(SETTINGS) == {f.name for f in fields(Config)} - {"source"}
    with pytest.raises(ConfigError, match="'colour' is not a setting agentloop knows"):
        apply_mapping(Config(), {"colour": "red"}, "test")


def test_the_hook_section_is_typed_and_merges():
    config = apply_mapping(Config(), {"hook": {"max_turns": 2, "checks": ["true"]}}, "a")
    config = apply_mapping(config, {"hook": {"max_cost": 0.25}}, "b")
    assert config.hook == HookSettings(checks=config.hook.checks, max_turns=2, max_cost=0.25)
    assert config.hook.budget() == {"max_turns": 2, "max_cost": 0.25}
    assert config.to_dict()["hook"]["checks"][0]["run"] == "true"
    assert Config().to_dict()["hook"] == {}
