"""JSON/YAML readers: one InputError naming the file and what was expected."""

from __future__ import annotations

import pytest

from brainalign.errors import InputError
from brainalign.readers import read_json_object, read_yaml_mapping


def test_json_object_and_its_errors(tmp_path):
    path = tmp_path / "m.json"
    with pytest.raises(InputError, match=r"m\.json: metrics not found"):
        read_json_object(path, "metrics not found")
    path.write_text("{bad")
    with pytest.raises(InputError, match=r"m\.json: not valid JSON"):
        read_json_object(path, "metrics not found")
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match=r"m\.json: expected \{task: \.\.\.\}"):
        read_json_object(path, "metrics not found", "expected {task: ...}")
    path.write_text('{"a": 1}')
    assert read_json_object(path, "metrics not found") == {"a": 1}


def test_yaml_mapping_and_its_errors(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a: [1\n")
    with pytest.raises(InputError, match=r"p\.yaml: not valid YAML"):
        read_yaml_mapping(path, "missing")
    path.write_text("- 1\n")
    with pytest.raises(InputError, match=r"p\.yaml: expected a mapping"):
        read_yaml_mapping(path, "missing")
    path.write_text("a: 1e-3\n")
    assert read_yaml_mapping(path, "missing") == {"a": "1e-3"}  # YAML 1.1: params.section converts
