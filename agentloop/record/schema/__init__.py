"""The trajectory's JSON Schema (draft 2020-12), shipped in the package for anyone reading trajectories.

agentloop itself never validates at run time; check events against it with any JSON Schema validator
(the tests use `jsonschema`).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("trajectory.schema.json")


@cache
def trajectory_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
