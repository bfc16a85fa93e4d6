"""The method registry: every explanation method is one ``Method`` subclass, registered by name.

``method_names()``, the CLI's choices, the protocol's option table and the per-model method lists
are all read from here, so a new method is one file with ``@register`` on its class.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from whyserve.errors import InvalidOption
from whyserve.methods.base import Method
from whyserve.models import ModelSpec
from whyserve.options import parse

REGISTRY: dict[str, Method] = {}
# The listing order of the first methods; any other module under whyserve/methods/ is imported
# after them (so a new method is its one file), except these helpers.
BUILTIN = ("gradcam", "contrastive", "scorecam", "bcos")
_HELPERS = frozenset({"base", "fgvis_defense", "gradient", "registry"})
_modules: tuple[str, ...] | None = None  # the method modules, once imported


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` (one instance of it) servable under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    _import_builtin()
    if name not in REGISTRY:
        raise InvalidOption("method", f"unknown method {name!r}", list(REGISTRY))
    return REGISTRY[name]


def requirement_of(name: object) -> str:
    """ "; <what a model needs for method name>" for a registered method that says so, else ""."""
    _import_builtin()
    method = REGISTRY.get(name.strip().lower()) if isinstance(name, str) else None
    return f"; {method.requirement()}" if method is not None and method.requirement() else ""


def methods_for(spec: ModelSpec) -> tuple[Method, ...]:
    """The registered methods that can explain ``spec``'s model (B-cos needs a B-cos model)."""
    return tuple(m for m in all_methods() if m.supports(spec))


def parse_method_options(method: Method, raw: Mapping[str, object]) -> Any:
    """``method``'s options dataclass from raw values (header text, JSON, YAML, CLI strings);
    ``InvalidOption`` names a bad or foreign option, and the methods that take a foreign one."""
    for name in raw:
        if name not in method.option_names:
            valid = [f"method={m.name}" for m in all_methods() if name in m.option_names]
            raise InvalidOption(name, f"method {method.name!r} takes no {name}", valid)
    return parse(method.options, raw)


def method_names() -> tuple[str, ...]:
    return tuple(m.name for m in all_methods())


def all_methods() -> tuple[Method, ...]:
    """Every registered method: whyserve's own in the order of their modules, then the others
    in the order they registered (the same listing whichever module was imported first)."""
    modules = _import_builtin()
    rank = {f"whyserve.methods.{module}": i for i, module in enumerate(modules)}
    return tuple(sorted(REGISTRY.values(), key=lambda m: rank.get(type(m).__module__, len(rank))))


def _import_builtin() -> tuple[str, ...]:
    # Imported lazily, once: the method modules import this one.
    global _modules
    if _modules is None:
        found = {m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])} - _HELPERS - set(BUILTIN)
        _modules = (*BUILTIN, *sorted(found))
        for module in _modules:
            importlib.import_module(f"whyserve.methods.{module}")
    return _modules
