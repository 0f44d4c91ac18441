"""Read a JSON or YAML file, or raise one InputError naming it and what was expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from brainalign.errors import InputError


def _read_mapping(path: str | Path, missing: str, expected: str, parse: Any, kind: str,
                  errors: Any) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, missing)
    try:
        data = parse(path.read_text())
    except errors as exc:
        raise InputError(path, f"not valid {kind} ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, expected)
    return data


def read_json_object(path: str | Path, missing: str, expected: str = "expected a JSON object"
                     ) -> dict[str, Any]:
    """The JSON object in ``path``; ``missing``/``expected`` say what a user should know."""
    return _read_mapping(path, missing, expected, json.loads, "JSON", json.JSONDecodeError)


def read_yaml_mapping(path: str | Path, missing: str, expected: str = "expected a mapping"
                      ) -> dict[str, Any]:
    """The YAML mapping in ``path`` (safe loader); errors as :func:`read_json_object`."""
    return _read_mapping(path, missing, expected, yaml.safe_load, "YAML", yaml.YAMLError)
