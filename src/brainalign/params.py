"""params.yaml: the one place pipeline settings live. Sections are validated into dataclasses.

Every section is a frozen dataclass whose defaults are the paper's protocol; a key that is
unknown or a value of the wrong type raises one :class:`InputError` naming ``params.yaml: key``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from brainalign.errors import InputError
from brainalign.readers import read_yaml_mapping

T = TypeVar("T")
# PyYAML (YAML 1.1) loads exponent numbers without a dot, like 1e-10, as strings.
_YAML11_EXPONENT = re.compile(r"^[+-]?[0-9]+(\.[0-9]*)?[eE][+-]?[0-9]+$")
DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Read params.yaml into a dict (error naming the file when missing or malformed)."""
    return read_yaml_mapping(path, "parameter file not found (run from the repository root)",
                             "expected a mapping of sections at the top level")


def _check(value: Any, hint: Any, key: str, where: str) -> Any:
    """Validate ``value`` against a type hint; returns the (possibly converted) value."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check(value, arg, key, where)
            except InputError as exc:
                errors.append(exc.problem)
        raise InputError(f"{where}: {key}", " or ".join(errors) or "expected null")
    if origin is typing.Literal:
        if value not in args:
            raise InputError(f"{where}: {key}", f"expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise InputError(f"{where}: {key}", f"expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_check(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{where}: {key}", f"expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return section(hint, value, f"{key}", where)
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: {key}", f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: {key}", f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str) and _YAML11_EXPONENT.match(value):  # YAML 1.1 reads 1e-10 as str
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{where}: {key}", f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"{where}: {key}", f"expected a string, got {value!r}")
        return value
    return value


def section(
    cls: type[T],
    mapping: Mapping[str, Any] | None,
    prefix: str,
    where: str = "params.yaml",
    also: Iterable[str] = (),
) -> T:
    """Build dataclass ``cls`` from ``mapping`` (a params.yaml section), validating every key.

    Types come from the dataclass's hints; ranges and cross-field rules from its
    ``__post_init__`` (an InputError raised there is re-anchored on ``where``). ``also`` names
    keys of the section that the caller reads itself (accepted, not passed to ``cls``).
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise InputError(f"{where}: {prefix}", f"expected a mapping, got {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    known = set(fields) | set(also)
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise InputError(
            f"{where}: {prefix}.{unknown[0]}", f"unknown key; expected one of {sorted(known)}"
        )
    values = {
        name: _check(mapping[name], hints[name], f"{prefix}.{name}", where)
        for name in fields
        if name in mapping
    }
    try:
        return cls(**values)
    except InputError as exc:
        raise InputError(f"{where}: {exc.where}", exc.problem) from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {prefix}", str(exc)) from None


def edit_params(path: str | Path, mutate: typing.Callable[[Any], None]) -> None:
    """Change params.yaml in place keeping its comments and layout (ruamel.yaml round trip).

    ``mutate`` receives the document (a mapping of sections) and edits it; the file is written
    atomically. New mappings are written in block style.
    """
    import io

    from ruamel.yaml import YAML

    from brainalign.atomic import write_text

    load_params(path)  # the usual clear errors for a missing or malformed file
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = yaml.load(Path(path).read_text())
    mutate(doc)
    doc = _flow_lists(doc)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    write_text(path, buf.getvalue())


def _flow_lists(node: Any) -> Any:
    """Plain lists of scalars written in flow style (``[a, b]``), as params.yaml has them."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, dict):
        for key in list(node):
            node[key] = _flow_lists(node[key])
        return node if isinstance(node, CommentedMap) else CommentedMap(node)
    if isinstance(node, list):
        items = [_flow_lists(v) for v in node]
        if isinstance(node, CommentedSeq):
            node[:] = items
            return node
        seq = CommentedSeq(items)
        if all(not isinstance(v, dict | list) for v in items):
            seq.fa.set_flow_style()
        return seq
    return node
