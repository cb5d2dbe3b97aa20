"""Every claim of the theory: import each derivation module, then run their checks.

The derivation modules register their claims with :func:`normdyn.theory.registry.claim`
when imported; this module is the one place that imports them all, so the registry
itself imports none of them (no import cycle).
"""

from __future__ import annotations

import time

from normdyn.theory import (  # noqa: F401  (imports register the claims)
    beyond_sgd,
    critical_lr,
    generation,
    norm_dynamics,
    pairs,
    scale_invariance,
)
from normdyn.theory.registry import Claim, ClaimResult, registered_claims

__all__ = ["all_claims", "run_claims"]


def all_claims() -> list[Claim]:
    """Every registered claim, in registration (derivation) order within each section."""
    return registered_claims()


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
