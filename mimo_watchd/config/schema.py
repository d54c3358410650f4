"""The schema is the settings classes: each option is a dataclass field with its metadata.

An option is declared once, as a field of a settings class (``settings.py``, each decorated
with :func:`settings_class`) made with :func:`option` or :func:`section`: its type says what
kind of value it takes, its default is the default, and the metadata holds the help text, an
example, allowed values, bounds and an optional value check. The validator, the generated
``config.example.yaml`` and the ``SCHEMA`` view all walk ``dataclasses.fields``, so adding an
option is one edit: a new field.

Kinds, from the field's type: ``str``, ``int``, ``float``, ``bool``, ``Path`` (``path``),
``tuple[str, ...]`` (``list[str]``), a settings class (``section``), a tuple of them
(``list[section]``); ``X | None`` makes an option nullable.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
OPTION = "mimo_watchd.option"  # the metadata key of an option's details
_NO_EXAMPLE = object()
_OPTIONS: dict[type[Any], Mapping[str, Opt]] = {}  # per class: its fields never change


@dataclass(frozen=True)
class Details:
    """What a field's metadata says about its option (everything its type does not)."""

    help: str
    example: Any = _NO_EXAMPLE
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    check: Callable[[Any], object] | None = None  # raises ValueError for a bad value
    unset_in_example: bool = False  # the example shows it commented out (see ``option``)


@dataclass(frozen=True)
class Opt:
    """One option of the schema as the validator and the example renderer see it."""

    kind: str  # str | int | float | bool | path | list[str] | section | list[section]
    default: Any = None  # as it would be written in YAML (None when required or null)
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False
    nullable: bool = False
    children: Mapping[str, Opt] = dataclasses.field(default_factory=dict)
    example: Any = None  # a value worth showing: the default unless one is given
    section: type | None = None  # the settings class of a section or list of sections
    check: Callable[[Any], object] | None = None
    unset_in_example: bool = False


def option(*, default: Any = dataclasses.MISSING, help: str, example: Any = _NO_EXAMPLE,
           choices: tuple[str, ...] = (), minimum: float | None = None,
           maximum: float | None = None, check: Callable[[Any], object] | None = None,
           unset_in_example: bool = False) -> Any:
    """A field that is an option; without ``default`` the option is required.

    Required and nullable options need an ``example`` (shown in ``config.example.yaml``);
    the others show their default. ``unset_in_example``: the example shows the option
    commented out, for one whose value when unset depends on where the daemon runs (a copy
    of the example must not pin it).
    """
    details = Details(help, example, choices, minimum, maximum, check, unset_in_example)
    return dataclasses.field(default=default, metadata={OPTION: details})


def section(*, default_factory: Callable[[], Any], help: str) -> Any:
    """A field holding a section (a settings class) that is always present."""
    return dataclasses.field(default_factory=default_factory, metadata={OPTION: Details(help)})


@typing.dataclass_transform(frozen_default=True, kw_only_default=True,
                            field_specifiers=(option, section))
def settings_class(cls: type[T]) -> type[T]:
    """Makes ``cls`` a frozen, keyword-only dataclass whose ``option`` fields are the schema
    (mypy then knows which options are required)."""
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


def is_option(f: dataclasses.Field[Any]) -> bool:
    """Whether a dataclass field is an option (``Settings.source`` is not)."""
    return OPTION in f.metadata


def options(cls: type[Any]) -> Mapping[str, Opt]:
    """The options of a settings class, in declaration order (nested sections included)."""
    known = _OPTIONS.get(cls)
    if known is None:
        hints = typing.get_type_hints(cls)
        known = _OPTIONS[cls] = types.MappingProxyType(
            {f.name: _opt(f, hints[f.name]) for f in dataclasses.fields(cls) if is_option(f)})
    return known


def _opt(f: dataclasses.Field[Any], hint: Any) -> Opt:
    details: Details = f.metadata[OPTION]
    inner, nullable = _unwrap_optional(hint)
    kind, sect = _kind(inner)
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    default = None if required or kind == "section" else _yaml_value(f.default)
    if kind == "section" and not nullable:
        default = {}
    example = details.example
    if example is _NO_EXAMPLE:
        if kind not in ("section", "list[section]") and default is None:
            raise TypeError(f"option {f.name!r} is required or null by default: give an example")
        example = default
    return Opt(kind=kind, default=default, help=details.help, choices=details.choices,
               minimum=details.minimum, maximum=details.maximum, required=required,
               nullable=nullable, children=options(sect) if sect is not None else {},
               example=example, section=sect, check=details.check,
               unset_in_example=details.unset_in_example)


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported option type {hint!r}")
        return args[0], True
    return hint, False


def _kind(hint: Any) -> tuple[str, type | None]:
    simple = {str: "str", int: "int", float: "float", bool: "bool", Path: "path"}
    if hint in simple:
        return simple[hint], None
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return "section", hint
    if typing.get_origin(hint) is tuple:
        item, ellipsis = typing.get_args(hint)
        if ellipsis is not Ellipsis:
            raise TypeError(f"unsupported option type {hint!r}")
        if item is str:
            return "list[str]", None
        if dataclasses.is_dataclass(item) and isinstance(item, type):
            return "list[section]", item
    raise TypeError(f"unsupported option type {hint!r}")


def _yaml_value(value: Any) -> Any:
    """A field's default as YAML would spell it: tuples as lists, relative paths as ./x."""
    if isinstance(value, tuple):
        return [_yaml_value(v) for v in value]
    if isinstance(value, Path):
        return str(value) if value.is_absolute() else f"./{value}"
    return value
