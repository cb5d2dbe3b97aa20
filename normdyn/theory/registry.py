"""The registry of symbolic claims checked by ``normdyn check``.

A *claim* is a named statement of the theory together with a function that
re-derives it in SymPy and checks it through an independent route
(substitution, a concrete instance, ``solve``, ``dsolve``...).  Claim names are
stable: reports, the JSON output and the paper-figure verdicts refer to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Evidence", "Claim", "ClaimResult", "claim", "all_claims", "run_claims"]


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


def all_claims() -> list[Claim]:
    """Every registered claim, in registration (derivation) order."""
    from normdyn.theory import (  # noqa: F401  (imports register the claims)
        beyond_sgd,
        critical_lr,
        norm_dynamics,
        numeric,
        pairs,
        scale_invariance,
    )

    return sorted(_REGISTRY.values(), key=lambda c: c.section)  # stable: keeps order


def run_claims(names: list[str] | None = None) -> list[ClaimResult]:
    """Run the checks of ``names`` (default: all) and time each one.

    A check that raises counts as failed; the exception text is kept in
    :attr:`ClaimResult.error` rather than propagated, so one broken derivation
    does not hide the verdicts of the others.
    """
    claims = all_claims()
    if names is not None:
        known = {c.name for c in claims}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"names: unknown claim(s) {unknown}; known: {sorted(known)}")
        claims = [c for c in claims if c.name in names]
    results = []
    for item in claims:
        start = time.perf_counter()
        try:
            ev = item.check()
            res = ClaimResult(item.name, item.statement, item.section, bool(ev.passed),
                              ev.latex, ev.detail, time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            res = ClaimResult(item.name, item.statement, item.section, False, "", "",
                              time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
        results.append(res)
    return results
