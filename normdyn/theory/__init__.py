"""The symbolic theory layer: the single source of truth for every formula.

* :mod:`~normdyn.theory.symbols` -- the canonical symbols.
* :mod:`~normdyn.theory.scale_invariance`, :mod:`~normdyn.theory.norm_dynamics`,
  :mod:`~normdyn.theory.pairs`, :mod:`~normdyn.theory.critical_lr`,
  :mod:`~normdyn.theory.beyond_sgd` -- the derivations, each registering its claims.
* :mod:`~normdyn.theory.generation` -- which expression each numeric function is, and its
  lambdified source; :mod:`~normdyn.theory.function_cache` -- that source cached on disk;
  :mod:`~normdyn.theory.numeric` -- the numeric functions (no SymPy import when cached).
* :mod:`~normdyn.theory.registry` -- the claim decorator; :mod:`~normdyn.theory.claims` --
  :func:`all_claims` and :func:`run_claims` (importing every derivation).
* :mod:`~normdyn.theory.document` -- the LaTeX/Markdown derivation document.

``import normdyn.theory`` imports neither SymPy nor the derivations;
:func:`all_claims` and :func:`run_claims` load them on first use.
"""

from __future__ import annotations

from typing import Any

from normdyn.theory.registry import ClaimResult

__all__ = ["ClaimResult", "all_claims", "run_claims"]


def __getattr__(name: str) -> Any:
    if name in ("all_claims", "run_claims"):
        from normdyn.theory import claims

        return getattr(claims, name)
    raise AttributeError(f"module 'normdyn.theory' has no attribute {name!r}")
