"""Read a tiny INI-like settings format.

    # a comment
    [section]
    key = value

Keys outside any section go to the "default" section. Values "true"/"false" become booleans
and whole numbers become ints.
"""


class SettingsError(ValueError):
    """A line that is not a comment, a section header or a key = value pair."""


def _convert(value):
    lowered = value.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if value.lstrip("-").isdigit():
        return int(value)
    return value


def _strip_comment(line):
    if line.lstrip().startswith(("#", ";")):
        return ""
    return line


def parse_config(text):
    """Parse settings text into {section: {key: value}}."""
    result = {"default": {}}
    section = "default"
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            if not section:
                raise SettingsError(f"line {number}: empty section name")
            result.setdefault(section, {})
            continue
        if "=" not in line:
            raise SettingsError(f"line {number}: expected 'key = value', got {line!r}")
        key, value = line.split("=", 1)
        key = key.strip()
        if not key:
            raise SettingsError(f"line {number}: missing key")
        result[section][key] = _convert(value.strip())
    return result


def get(settings, dotted, default=None):
    """Look up 'section.key' (or just 'key' for the default section)."""
    section, _, key = dotted.rpartition(".")
    return settings.get(section or "default", {}).get(key, default)
