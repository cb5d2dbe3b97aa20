"""The registry of symbolic claims checked by ``normdyn check``.

A *claim* is a named statement of the theory together with a function that
re-derives it in SymPy and checks it through an independent route
(substitution, a concrete instance, ``solve``, ``dsolve``...).  Claim names are
stable: reports, the JSON output and the paper-figure verdicts refer to them.

This module imports no derivation module (they import it to register their claims);
:mod:`normdyn.theory.claims` imports them all and runs the checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Evidence", "Claim", "ClaimResult", "claim", "registered_claims"]


@dataclass(frozen=True)
class Evidence:
    """What a claim's check found: whether it holds, its LaTeX, and a detail line."""

    passed: bool
    latex: str
    detail: str = ""


@dataclass(frozen=True)
class Claim:
    """A named statement with the SymPy check that establishes it."""

    name: str
    statement: str
    section: str
    check: Callable[[], Evidence]


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of running one claim's check."""

    name: str
    statement: str
    section: str
    passed: bool
    latex: str
    detail: str
    seconds: float
    error: str = field(default="")

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "statement": self.statement,
            "section": self.section,
            "passed": self.passed,
            "latex": self.latex,
            "detail": self.detail,
            "seconds": round(self.seconds, 4),
            "error": self.error,
        }


_REGISTRY: dict[str, Claim] = {}


def claim(name: str, statement: str, section: str) -> Callable:
    """Decorator registering ``fn`` as the check of claim ``name``."""

    def register(fn: Callable[[], Evidence]) -> Callable[[], Evidence]:
        if name in _REGISTRY:
            raise ValueError(f"claim name {name!r} is registered twice")
        _REGISTRY[name] = Claim(name, statement, section, fn)
        return fn

    return register


def registered_claims() -> list[Claim]:
    """The claims registered so far, by section (stable: keeps registration order within one).

    Only the claims of derivation modules already imported; :func:`normdyn.theory.claims.all_claims`
    imports every one first.
    """
    return sorted(_REGISTRY.values(), key=lambda c: c.section)
