"""SpeechBrain ``hyperparams.yaml`` files (HyperPyYAML) read as plain data, never executed.

Shared by the SpeechBrain families (SepFormer, MetricGAN+): ``yaml.SafeLoader`` plus one
constructor for every ``!``-tag, which keeps the tag's target as text and its arguments as data
(:class:`HNode`); ``!ref`` references are followed, with arithmetic evaluated by a small
number-only evaluator. Nothing a file names is imported or called.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainalign.errors import InputError


@dataclass(frozen=True)
class HNode:
    """An inert HyperPyYAML tag: ``kind`` (new, name, ref, apply, ...), its target, its args.

    Nothing named by ``target`` is imported or called; the loader only keeps the text.
    """

    kind: str
    target: str
    args: Any = None


class _HyperLoader:
    """Builds the yaml loader once (pyyaml is imported only when a file is read)."""

    @staticmethod
    @functools.cache
    def loader() -> type:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def construct(loader: Any, suffix: str, node: Any) -> HNode:
            kind, _, target = suffix.partition(":")
            if isinstance(node, yaml.MappingNode):
                args: Any = loader.construct_mapping(node, deep=True)
            elif isinstance(node, yaml.SequenceNode):
                args = loader.construct_sequence(node, deep=True)
            else:
                args = loader.construct_scalar(node)
            if kind == "ref":
                return HNode("ref", str(args))
            return HNode(kind, target, args)

        Loader.add_multi_constructor("!", construct)
        return Loader


def read_hyperparams(path: str | Path) -> dict[str, Any]:
    """A speechbrain ``hyperparams.yaml`` as plain data (tags become :class:`HNode`).

    ``yaml.SafeLoader`` plus one constructor for every ``!``-tag: ``!new:cls`` / ``!name:fn``
    / ``!apply:fn`` keep their target as text and their arguments as data; ``!ref <key>``
    keeps the expression. Python tags (``!!python/...``) are refused by the safe loader.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_HyperLoader.loader())  # noqa: S506 (a SafeLoader subclass)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a readable hyperparams file ({str(exc).splitlines()[0]})"
                         ) from None
    if not isinstance(data, dict):
        raise InputError(path, f"expected a mapping at the top, got {type(data).__name__}")
    return data


_REF = re.compile(r"<([^<>]+)>")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
        ast.Pow: operator.pow}


def _arith(expr: str) -> Any:
    """Evaluate +, -, *, /, //, %, ** on numbers (HyperPyYAML's ``!ref`` arithmetic)."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError("not arithmetic")

    return ev(ast.parse(expr, mode="eval"))


def _lookup(key: str, root: Mapping[str, Any], where: str, depth: int) -> Any:
    value: Any = root
    for part in re.split(r"[.\[\]]+", key.strip()):
        if not part:
            continue
        if not isinstance(value, Mapping) or part not in value:
            raise InputError(where, f"!ref <{key}> names no entry of the file")
        value = value[part]
    return resolve(value, root, where, depth + 1)


def resolve(value: Any, root: Mapping[str, Any], where: str = "hyperparams.yaml",
            depth: int = 0) -> Any:
    """Follow ``!ref`` nodes: ``<key>`` alone -> that entry; with arithmetic -> the number;
    otherwise the expression with the entries' text substituted."""
    if depth > 50:
        raise InputError(where, "!ref chain too deep (a cycle?)")
    if not (isinstance(value, HNode) and value.kind == "ref"):
        return value
    expr = value.target.strip()
    whole = _REF.fullmatch(expr)
    if whole:
        return _lookup(whole.group(1), root, where, depth)
    text = _REF.sub(lambda m: str(_lookup(m.group(1), root, where, depth)), expr)
    try:
        return _arith(text)
    except (ValueError, SyntaxError, ZeroDivisionError):
        return text


def new_args(value: Any, root: Mapping[str, Any], target: str, defaults: Mapping[str, Any],
             where: str) -> dict[str, Any]:
    """The keyword arguments of a ``!new:<target>`` node, defaults filled in, refs followed."""
    node = resolve(value, root, where)
    if not (isinstance(node, HNode) and node.kind == "new"):
        raise InputError(where, f"expected a !new:{target} entry, got {node!r}")
    if node.target != target:
        raise InputError(where, f"expected !new:{target}, found !new:{node.target}")
    args = node.args if node.args is not None else {}
    if not isinstance(args, Mapping):
        raise InputError(where, f"!new:{target} with positional arguments is not supported")
    unknown = sorted(set(args) - set(defaults))
    if unknown:
        raise InputError(where, f"!new:{target} has arguments this port does not know: "
                         f"{unknown}")
    return {k: resolve(args.get(k, d), root, where) for k, d in defaults.items()}
