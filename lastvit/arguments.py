"""Command-line flags from dataclasses, as transformers' `HfArgumentParser` does, without importing
transformers (so a CLI's `--help` stays fast). Each field is one flag: ``--field-name``, its help
from ``metadata["help"]``, its type from the annotation; defaults are written once, in the dataclass.

    @dataclass(kw_only=True)
    class Options:
        epochs: float = option(10, "passes over the training set (default: 10)")

    add_arguments(parser, Options)
    options = from_args(Options, parser.parse_args())
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable
from pathlib import Path


def option(
    default=dataclasses.MISSING,
    help: str | None = None,
    *,
    flag: str | None = None,
    cli: bool = True,
    **argparse_kwargs,
):
    """A dataclass field that is also a flag. `flag` renames it (e.g. ``--no-progress`` for
    ``progress: bool = True``; a name without dashes, the field's own, makes it positional); `argparse_kwargs` (choices, metavar, nargs, ...) go to `add_argument`;
    ``cli=False`` keeps a field out of the parser (e.g. an in-memory dataset)."""
    metadata = {"help": help, "flag": flag, "cli": cli, "argparse": argparse_kwargs}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _base_type(annotation):
    """``int | None`` -> int; ``tuple[float, float]`` -> (float, 2); ``tuple[int, ...]`` -> (int, "+")."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0]
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        return args[0], "+" if args[-1] is Ellipsis else len(args)
    if typing.get_origin(annotation) is typing.Literal:
        return str, None
    return annotation, None


def add_arguments(
    parser,
    cls,
    include: Iterable[str] | None = None,
    defaults: dict | None = None,
    help: dict | None = None,
    required: Iterable[str] = (),
) -> None:
    """Add one flag per field of dataclass `cls` to `parser` (a parser or an argument group).
    `include` picks fields by name; `defaults` and `help` override a field's default or help text,
    and `required` makes flags required, for this CLI only."""
    hints = typing.get_type_hints(cls)
    include = None if include is None else set(include)
    defaults, help = defaults or {}, help or {}
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if not meta.get("cli", True) or (include is not None and field.name not in include):
            continue
        kwargs = dict(dest=field.name, help=help.get(field.name, meta.get("help")), **meta.get("argparse", {}))
        if field.name in defaults:
            default = defaults[field.name]
        elif field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        flag = meta.get("flag") or "--" + field.name.replace("_", "-")
        base, count = _base_type(hints[field.name])
        if base is bool:
            kwargs["action"] = "store_false" if default is True else "store_true"
        else:
            kwargs.setdefault("type", base if base in (int, float, Path) else str)
            if count:
                kwargs.setdefault("nargs", count)
        if not flag.startswith("-"):  # a positional argument: argparse names it by `flag` and requires it
            del kwargs["dest"]
            parser.add_argument(flag, **kwargs)
            continue
        if default is dataclasses.MISSING or field.name in required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        parser.add_argument(flag, **kwargs)


def from_args(cls, namespace: argparse.Namespace, **overrides):
    """Build dataclass `cls` from the parsed flags it has (fields the parser lacks keep their defaults);
    the lists of ``nargs`` flags become tuples where the field is a tuple."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.init and field.name in vars(namespace):
            value = getattr(namespace, field.name)
            if isinstance(value, list) and _is_tuple(hints[field.name]):
                value = tuple(value)
            values[field.name] = value
    return cls(**{**values, **overrides})


def _is_tuple(annotation) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(typing.get_origin(a) is tuple for a in typing.get_args(annotation))
    return typing.get_origin(annotation) is tuple


def declared_defaults(*classes, defaults: dict | None = None) -> dict:
    """What the flags of `classes` default to (`defaults` overriding a field's, as in `add_arguments`):
    the specification a CLI's `--help` is tested against."""
    values = {}
    for cls in classes:
        for field in dataclasses.fields(cls):
            if not field.metadata.get("cli", True):
                continue
            if field.default is not dataclasses.MISSING:
                values[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                values[field.name] = field.default_factory()
            else:
                values[field.name] = None  # a required flag
    return {**values, **(defaults or {})}


def to_argv(instance, program: str, skip: Iterable[str] = ()) -> str:
    """The command line that gives `instance` (flags whose value differs from the default), for
    model cards and logs."""
    parts = [program]
    for field in dataclasses.fields(instance):
        meta = field.metadata
        if not meta.get("cli", True) or field.name in skip:
            continue
        value = getattr(instance, field.name)
        default = (
            field.default
            if field.default is not dataclasses.MISSING
            else (field.default_factory() if field.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        )
        if value == default and default is not dataclasses.MISSING:
            continue
        flag = meta.get("flag") or "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts += [flag, *map(str, value)]
        elif value is not None:
            parts += [flag, str(value)]
    return " ".join(parts)
