"""The explanation methods, by the name a request uses (see ``whyserve.methods.registry``).

A new method is one file here: a ``Method`` subclass decorated with ``@register`` (every
module of this package is imported when the registry is first read)."""

from whyserve.methods.base import Explanation, Method, MethodBatch, Needs, Output, OutputKind, ResolvedRequest
from whyserve.methods.registry import REGISTRY, all_methods, get_method, method_names, register

__all__ = [
    "REGISTRY",
    "Explanation",
    "Method",
    "MethodBatch",
    "Needs",
    "Output",
    "OutputKind",
    "ResolvedRequest",
    "all_methods",
    "get_method",
    "method_names",
    "register",
]
