import pytest
from settings import SettingsError, get, parse_config

TEXT = """
# comment
name = demo
[server]
port = 8080
debug = yes
url = http://x/?a=1
"""


def test_sections_and_types():
    s = parse_config(TEXT)
    assert s["default"]["name"] == "demo"
    assert s["server"]["port"] == 8080
    assert s["server"]["debug"] is True


def test_value_with_equals():
    s = parse_config(TEXT)
    assert get(s, "server.url") == "http://x/?a=1"


def test_bad_line():
    with pytest.raises(SettingsError):
        parse_config("just words")
