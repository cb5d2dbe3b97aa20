"""The symbolic theory layer: the single source of truth for every formula.

* :mod:`~normdyn.theory.symbols` -- the canonical symbols.
* :mod:`~normdyn.theory.scale_invariance`, :mod:`~normdyn.theory.norm_dynamics`,
  :mod:`~normdyn.theory.pairs`, :mod:`~normdyn.theory.critical_lr`,
  :mod:`~normdyn.theory.beyond_sgd` -- the derivations, each registering its claims.
* :mod:`~normdyn.theory.numeric` -- numeric functions generated from the derivations.
* :mod:`~normdyn.theory.registry` -- the claims and :func:`run_claims`.
* :mod:`~normdyn.theory.document` -- the LaTeX/Markdown derivation document.
"""

from __future__ import annotations

from normdyn.theory.registry import ClaimResult, all_claims, run_claims

__all__ = ["ClaimResult", "all_claims", "run_claims"]
