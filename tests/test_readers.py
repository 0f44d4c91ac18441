"""JSON/YAML readers: one InputError naming the file and what was expected."""

from __future__ import annotations

import pytest

from brainalign.errors import InputError
from brainalign.readers import read_json_object, read_yaml_mapping


@pytest.mark.parametrize(
    ("reader", "name", "kind", "bad", "not_mapping", "default", "good", "value"),
    [
        (read_json_object, "m.json", "JSON", "{bad", "[1, 2]", "expected a JSON object",
         '{"a": 1}', {"a": 1}),
        # YAML 1.1 reads 1e-3 as a string; params.section converts it
        (read_yaml_mapping, "p.yaml", "YAML", "a: [1\n", "- 1\n", "expected a mapping",
         "a: 1e-3\n", {"a": "1e-3"}),
    ],
)
def test_mapping_readers_and_their_errors(tmp_path, reader, name, kind, bad, not_mapping,
                                          default, good, value):
    path = tmp_path / name
    stem = name.replace(".", r"\.")
    with pytest.raises(InputError, match=rf"{stem}: file not found"):
        reader(path, "file not found")
    path.write_text(bad)
    with pytest.raises(InputError, match=rf"{stem}: not valid {kind}"):
        reader(path, "file not found")
    path.write_text(not_mapping)
    with pytest.raises(InputError, match=rf"{stem}: {default}"):
        reader(path, "file not found")
    with pytest.raises(InputError, match=rf"{stem}: expected \{{task: \.\.\.\}}"):
        reader(path, "file not found", "expected {task: ...}")
    path.write_text(good)
    assert reader(path, "file not found") == value
