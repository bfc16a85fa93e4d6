"""Method options, declared once: each method's options are a frozen dataclass whose fields
are made with ``option()``. From that one declaration come request parsing (and the 400s,
naming what is valid), the CLI flags and their ``--help``, the model-config defaults
(``method_options.<method>``) and the docs' option table (``options_table``).

A field's type says how a raw value (header text, a JSON value, a CLI string, YAML) is read:
``int`` / ``float`` within ``low``..``high``, ``str`` one of ``choices``, ``bool`` a switch
(on/off), and ``X | None`` the same or, when ``none_word`` is given, that word (None).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from whyserve.errors import InvalidOption

MAX_INT_DIGITS = 18  # a longer integer is refused before int() (which is quadratic in digits)
_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


@dataclass(frozen=True)
class OptionInfo:
    """What ``option()`` records on a field: its help and the values it takes."""

    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    name: str | None = None  # the request's name when the field's differs (``lambda``)
    none_word: str | None = None  # a word that means None ("all" channels)
    default_text: str | None = None  # how docs and --help state a default that is not a plain value


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    low: float | None = None,
    high: float | None = None,
    name: str | None = None,
    none_word: str | None = None,
    default_text: str | None = None,
) -> Any:
    """A dataclass field that is a method option (see the module docstring)."""
    info = OptionInfo(help, choices, low, high, name, none_word, default_text)
    return dataclasses.field(default=default, metadata={"option": info})


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that takes none."""


@dataclass(frozen=True)
class Declared:
    """One declared option: its request name, the dataclass field and how it is read."""

    name: str
    field: str
    kind: type  # int, float, str or bool
    optional: bool  # the type is ``X | None``
    default: object
    info: OptionInfo

    def valid(self) -> list[str]:
        """What this option accepts, as a 400 names it."""
        words = [self.info.none_word] if self.info.none_word else []
        if self.kind is bool:
            return ["on", "off"]
        if self.kind is str:
            return [*words, *self.info.choices]
        return [*words, number_range(self.kind is int, self.info.low, self.info.high)]

    def parse(self, value: object) -> object:
        if value is None or (self.info.none_word and isinstance(value, str) and value.strip().lower() == self.info.none_word):
            if self.optional:
                return None
            value = self.default if value is None else value
        if self.kind is bool:
            return parse_switch(self.name, value)
        if self.kind is str:
            return parse_choice(self.name, value, self.info.choices, self.valid())
        return parse_number(self.name, value, self.kind is int, self.info.low, self.info.high, self.valid())


@functools.cache  # read on every request: the type hints are evaluated once per options class
def declared(options: type) -> tuple[Declared, ...]:
    """The options an options dataclass declares, in field order."""
    hints = typing.get_type_hints(options)
    out = []
    for f in dataclasses.fields(options):
        info = f.metadata.get("option")
        if info is None:
            raise TypeError(f"{options.__name__}.{f.name} is not declared with option()")
        kind, optional = _kind(hints[f.name])
        out.append(Declared(info.name or f.name, f.name, kind, optional, f.default, info))
    return tuple(out)


def parse(options: type, raw: Mapping[str, object]) -> Any:
    """An instance of ``options`` from raw values by request name (missing: the defaults);
    ``InvalidOption`` names the first bad one and what it takes."""
    values = {d.field: d.parse(raw[d.name]) for d in declared(options) if d.name in raw}
    return options(**values)


def _kind(hint: object) -> tuple[type, bool]:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1 and kinds[0] in (int, float, str, bool):
            return kinds[0], True
    elif hint in (int, float, str, bool):
        return typing.cast(type, hint), False
    raise TypeError(f"an option must be int, float, str or bool (or one of them | None), not {hint}")


# -- the parsers every option and protocol field uses -----------------------------------------


def number_range(integer: bool, low: float | None, high: float | None) -> str:
    what, low_, high_ = ("an integer" if integer else "a number"), _bound(integer, low), _bound(integer, high)
    if low is not None and high is not None:
        return f"{what} from {low_} to {high_}"
    return f"{what} >= {low_}" if low is not None else f"{what} <= {high_}" if high is not None else what


def _bound(integer: bool, bound: float | None) -> str:
    return str(int(bound)) if integer and bound is not None else f"{bound:g}" if bound is not None else ""


def parse_number(
    name: str,
    value: object,
    integer: bool = True,
    low: float | None = None,
    high: float | None = None,
    valid: list[str] | None = None,
) -> Any:
    """An int (from an int or ASCII digits with an optional sign) or a finite float (from a
    number or its text) in [low, high]; never a bool, and a float is not an integer."""
    valid = valid or [number_range(integer, low, high)]
    number: int | float
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (integer and isinstance(value, float)):
        raise InvalidOption(name, f"{short(value)} is not {'an integer' if integer else 'a number'}", valid)
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        try:
            if integer and not (digits.isascii() and digits.isdigit() and len(digits) <= MAX_INT_DIGITS):
                raise ValueError
            number = int(text) if integer else float(text)
        except ValueError:
            raise InvalidOption(name, f"{short(value)} is not {'an integer' if integer else 'a number'}", valid) from None
    else:
        try:
            number = value if integer else float(value)
        except OverflowError:
            raise InvalidOption(name, f"{short(value)} is not a finite number", valid) from None
    if not integer and not math.isfinite(number):
        raise InvalidOption(name, f"{short(value)} is not a finite number", valid)
    if (low is not None and number < low) or (high is not None and number > high):
        raise InvalidOption(name, f"{short(number)} is out of range", valid)
    return number


def parse_choice(name: str, value: object, choices: tuple[str, ...], valid: list[str] | None = None) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise InvalidOption(name, f"{short(value)} is not one of {', '.join(choices)}", valid or list(choices))
    return value.strip().lower()


def parse_switch(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _SWITCH:
        return _SWITCH[value.strip().lower()]
    raise InvalidOption(name, f"{short(value)} is not on or off", ["on", "off"])


def short(value: object) -> str:
    """``repr(value)``, shortened: a client's 10,000-digit number is not echoed back."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- the docs' table ------------------------------------------------------------------------------


def describe_default(d: Declared) -> str:
    if d.info.default_text is not None:
        return d.info.default_text
    if d.default is None:
        return d.info.none_word or "none"
    if isinstance(d.default, bool):
        return "on" if d.default else "off"
    return str(d.default)


def options_table(methods: Mapping[str, type]) -> str:
    """The Markdown table of every method's options (``methods``: name -> options dataclass)."""
    rows = ["| method | option | values | default | what it does |", "|---|---|---|---|---|"]
    for method, options in methods.items():
        for d in declared(options):
            rows.append(f"| {method} | `{d.name}` | {', '.join(d.valid())} | {describe_default(d)} | {d.info.help} |")
    return "\n".join(rows) + "\n"
