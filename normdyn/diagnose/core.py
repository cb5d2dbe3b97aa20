r"""``normdyn.diagnose(model, batch)``: the ELR picture of any torch model, from one batch.

For every conv/linear weight (a *candidate layer*) the scale-invariance detector
(:mod:`normdyn.layers.detection`) decides whether a normalization absorbs its scale.
The tracked layers are the scale-invariant, trainable ones; for each, at the given
weights :math:`w_0` and gradient :math:`g_0` on ``batch``,

.. math::

    a_\ell = \frac{\lVert g_\ell\rVert}{\lVert w_\ell\rVert},\qquad
    E_\ell = \eta_\ell\,a_\ell\ (\text{gradient ELR}),\qquad
    \eta^*_{\mathrm{pred}} = \frac{1}{\sqrt{a_{\max} a_{\min}}}

(:func:`~normdyn.theory.numeric.gradient_elr`, :func:`~normdyn.theory.numeric.critical_lr_of`)
over the *live* layers (:func:`normdyn._spread.dead_mask`: a zero gradient, or an ELR at most
``1e-12`` x the median, is dead and left out of every spread).  :math:`\eta_\ell` is the lr
of the layer's param group in ``optimizer`` or, without one, :math:`\eta^*_{\mathrm{pred}}`.
The lr curve (:mod:`normdyn.diagnose.lr_curve`) then takes one real optimizer step per lr
and measures the spread at the new weights; its minimiser is
:math:`\eta^*_{\mathrm{meas}}`.

The model and optimizer come back exactly (:mod:`normdyn.diagnose._state`): parameters,
buffers, optimizer state and hyper-parameters, ``requires_grad``, train/eval flags,
``.grad`` and the RNG states equal, bit for bit, what they were before the call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normdyn._checks import check_positive
from normdyn._spread import dead_mask, robust_spread, spread_max_min
from normdyn.diagnose._state import Snapshot
from normdyn.diagnose.lr_curve import LR_CURVE_COLUMNS, OneStepProbe, compute_loss, default_lrs
from normdyn.layers.detection import analyze_scale_invariance
from normdyn.theory.numeric import critical_lr_of, gradient_elr

__all__ = ["Diagnosis", "diagnose", "LAYER_COLUMNS", "SUMMARY_KEYS", "DISAGREEMENT_DECADES"]

LAYER_COLUMNS = ("layer_id", "name", "module_type", "norm_type", "scale_invariant", "skipped",
                 "reason", "w_norm", "g_norm", "a", "elr", "update_elr", "dead")
"""Columns of ``Diagnosis.layers``: one row per conv/linear weight, in forward (depth) order.

``name`` is the parameter's full dotted name, ``module_type`` the module's class,
``norm_type`` the absorbing norm's kind (``batch``, ``layer``, ...; empty when none),
``skipped`` whether the layer is left out (``reason`` says why: ``frozen``, ``not
invariant``, ``eval-mode norm``), ``w_norm`` :math:`\\lVert w\\rVert`, ``g_norm``
:math:`\\lVert g\\rVert`, ``a`` :math:`= \\lVert g\\rVert/\\lVert w\\rVert`, ``elr`` the
gradient ELR at the layer's lr, ``update_elr`` :math:`\\lVert\\Delta w\\rVert/\\lVert w\\rVert`
of one real optimizer step at that lr, ``dead`` a tracked layer with a dead gradient.
"""

SUMMARY_KEYS = ("spread", "robust_spread", "a_max", "a_min", "eta_pred", "eta_measured",
                "lr_stable_max", "n_dead", "n_tracked", "n_layers", "lr", "loss", "optimizer",
                "decades_apart", "advice")
"""Keys of ``Diagnosis.summary`` (``lr``: the optimizer's lr, ``None`` without one;
``decades_apart``: :math:`\\log_{10}(\\eta^*_{\\mathrm{meas}}/\\eta^*_{\\mathrm{pred}})`)."""

DISAGREEMENT_DECADES = 0.3
"""Predicted and measured :math:`\\eta^*` further apart than this (in decades) is flagged."""


@dataclass
class Diagnosis:
    """The result of :func:`diagnose`: ``layers``, ``summary``, ``lr_curve`` (see their columns)."""

    layers: pd.DataFrame
    summary: dict[str, Any]
    lr_curve: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def plot(self, save_to: str | None = None, **savefig_kwargs: Any) -> Any:
        """Per-layer log10 ELR and the lr curve; see :func:`normdyn.diagnose.plot.plot_diagnosis`."""
        from normdyn.diagnose.plot import plot_diagnosis

        return plot_diagnosis(self, save_to, **savefig_kwargs)

    def worst_layers(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` tracked layers furthest from the median log ELR (either side)."""
        tracked = self.layers[~self.layers["skipped"]].copy()
        log_e = np.log10(tracked["elr"].where(tracked["elr"] > 0))
        tracked["log10_elr_vs_median"] = log_e - np.nanmedian(log_e)
        order = tracked["log10_elr_vs_median"].abs().sort_values(ascending=False).index
        return tracked.loc[order[:n]]

    def to_json(self) -> str:
        """``{"summary", "layers", "lr_curve", "notes"}`` as JSON (NaN written as null)."""
        def clean(v: Any) -> Any:
            if isinstance(v, (float, np.floating)):
                return None if not math.isfinite(float(v)) else float(v)
            if isinstance(v, (np.integer,)):
                return int(v)
            if isinstance(v, np.bool_):
                return bool(v)
            return v

        def records(df: pd.DataFrame) -> list[dict[str, Any]]:
            return [{k: clean(v) for k, v in row.items()} for row in df.to_dict("records")]

        return json.dumps({"summary": {k: clean(v) for k, v in self.summary.items()},
                           "layers": records(self.layers), "lr_curve": records(self.lr_curve),
                           "notes": self.notes}, indent=2)

    def to_markdown(self) -> str:
        """The summary, the worst 10 layers and the lr curve as Markdown tables."""
        lines = ["| quantity | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in self.summary.items()]
        worst = self.worst_layers(10)[["layer_id", "name", "norm_type", "a", "elr", "dead"]]
        return "\n".join([*lines, "", _markdown_table(worst), "", _markdown_table(self.lr_curve)])


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "nan" if not math.isfinite(float(v)) else f"{float(v):.4g}"
    return str(v)


def _markdown_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


# --------------------------------------------------------------------------- the layer table


def _eval_mode_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if isinstance(m, (nn.modules.batchnorm._BatchNorm,
                              nn.modules.instancenorm._InstanceNorm))
            and not m.training and m.track_running_stats]


def _invariant_in_train_mode(model: nn.Module, example: Any) -> set[str]:
    """Parameter names that would be scale invariant with every eval-mode norm in train mode."""
    frozen = _eval_mode_norms(model)
    if not frozen:
        return set()
    for m in frozen:
        m.training = True
    try:
        return {v.param_name for v in analyze_scale_invariance(model, example) if v.invariant}
    finally:
        for m in frozen:
            m.training = False


def _call_order(model: nn.Module, names: list[str]) -> tuple[dict[str, int], list[Any]]:
    order: dict[str, int] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        def hook(_m: nn.Module, _args: Any, name: str = name) -> None:
            order.setdefault(name, len(order))
        handles.append(modules[name].register_forward_pre_hook(hook))
    return order, handles


def _optimizer_lrs(optimizer: torch.optim.Optimizer | None) -> dict[int, float]:
    if optimizer is None:
        return {}
    return {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}


def _describe_optimizer(optimizer: torch.optim.Optimizer | None) -> str:
    if optimizer is None:
        return "SGD (none given: plain SGD, lr = eta_pred)"
    group = optimizer.param_groups[0]
    keys = [k for k in ("lr", "momentum", "betas", "weight_decay") if k in group]
    args = ", ".join(f"{k}={group[k]}" for k in keys)
    more = f", {len(optimizer.param_groups)} param groups" if len(optimizer.param_groups) > 1 else ""
    return f"{type(optimizer).__name__}({args}{more})"


def _nothing_tracked(layers: pd.DataFrame) -> ValueError:
    counts = layers["reason"].str.split(":").str[0].value_counts()
    found = ", ".join(f"{n} {why}" for why, n in counts.items())
    return ValueError(f"model: no trainable scale-invariant layer to diagnose; found "
                      f"{len(layers)} conv/linear weight(s): {found}")


# --------------------------------------------------------------------------- summary


def _advice(s: dict[str, Any], lrs: np.ndarray) -> str:
    parts = []
    pred, meas = s["eta_pred"], s["eta_measured"]
    if math.isfinite(s["decades_apart"]):
        apart = abs(s["decades_apart"])
        if apart > DISAGREEMENT_DECADES:
            parts.append(f"predicted eta* {pred:.3g} and measured eta* {meas:.3g} differ by "
                         f"{apart:.2f} decades: the constant-c model does not describe one step "
                         "of this model, go by the measured curve")
        else:
            parts.append(f"predicted eta* {pred:.3g} and measured eta* {meas:.3g} agree within "
                         f"{apart:.2f} decades")
        if meas in (float(lrs.min()), float(lrs.max())):
            parts.append("the measured minimum is at the edge of the swept lrs: widen them")
    else:
        parts.append(f"no finite measured spread: predicted eta* {pred:.3g} is untested")
    lr, stable = s["lr"], s["lr_stable_max"]
    if lr is not None and math.isfinite(stable):
        if lr > stable:
            parts.append(f"your lr {lr:.3g} is above lr_stable_max {stable:.3g}: one step widens "
                         "the ELR spread, warm up from eta* (normdyn.CriticalLRWarmup)")
        else:
            parts.append(f"your lr {lr:.3g} does not widen the spread in one step")
    elif lr is None:
        parts.append(f"start at about {meas if math.isfinite(meas) else pred:.3g} "
                     "(normdyn.CriticalLRWarmup)")
    if s["n_dead"]:
        parts.append(f"{s['n_dead']} dead layer(s) left out of the spread")
    return "; ".join(parts)


def _summary(live_elr: np.ndarray, a_live: np.ndarray, eta_pred: float, curve: pd.DataFrame,
             n_dead: int, n_tracked: int, n_layers: int, lr: float | None, loss: float,
             optimizer: str, lrs: np.ndarray) -> dict[str, Any]:
    measured = curve["spread_measured"].to_numpy()
    finite = np.isfinite(measured)
    eta_measured = float(curve["lr"].to_numpy()[finite][np.argmin(measured[finite])]) \
        if finite.any() else math.nan
    initial = spread_max_min(live_elr)
    stable = finite & (measured <= initial) if math.isfinite(initial) else finite
    s: dict[str, Any] = {
        "spread": initial,
        "robust_spread": robust_spread(live_elr),
        "a_max": float(a_live.max()),
        "a_min": float(a_live.min()),
        "eta_pred": eta_pred,
        "eta_measured": eta_measured,
        "lr_stable_max": float(curve["lr"].to_numpy()[stable].max()) if stable.any() else math.nan,
        "n_dead": n_dead,
        "n_tracked": n_tracked,
        "n_layers": n_layers,
        "lr": lr,
        "loss": loss,
        "optimizer": optimizer,
        "decades_apart": math.log10(eta_measured / eta_pred) if math.isfinite(eta_measured)
        else math.nan,
    }
    s["advice"] = _advice(s, lrs)
    return s


# --------------------------------------------------------------------------- diagnose


def _check_args(model: Any, loss_fn: Any, optimizer: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if optimizer is not None and not (hasattr(optimizer, "param_groups")
                                      and hasattr(optimizer, "state")
                                      and callable(getattr(optimizer, "step", None))):
        raise TypeError("optimizer must be a torch.optim.Optimizer (param_groups, state, "
                        f"step), got {type(optimizer).__name__}")


def diagnose(model: nn.Module, batch: Any, loss_fn: Callable[..., Tensor] = F.cross_entropy,
             *, optimizer: torch.optim.Optimizer | None = None, lrs: Any = None,
             example_input: Any = None, seed: int = 0,
             progress: Callable[[int], None] | None = None) -> Diagnosis:
    """Per-layer ELRs, predicted and measured :math:`\\eta^*` and the one-step lr curve.

    ``batch`` is an ``(inputs, targets)`` pair (loss ``loss_fn(model(inputs), targets)``;
    ``inputs`` a tensor, a tuple or a dict of keyword inputs) or an input tensor (loss
    ``loss_fn(model(batch))``).  The model is analysed and stepped in its current
    train/eval mode.  ``optimizer`` is stepped for real at each lr (every param group's
    lr set to it; plain SGD over the trainable parameters when ``None``); it must read
    ``.grad`` without changing it (torch's optimizers do).  ``lrs`` defaults to 25
    log-spaced lrs two decades either side of :math:`\\eta^*_{\\mathrm{pred}}`.
    ``example_input`` is only for the detector's forward-hook fallback (default: the
    batch's inputs).  ``seed`` seeds torch before every forward (dropout), so two calls
    give identical results.  ``progress(n)`` is called after each lr.

    Raises :class:`ValueError` (one line) when no trainable scale-invariant layer is
    found, or when the loss or a gradient at the given weights is not finite.  See the
    module docstring for the formulas and :data:`LAYER_COLUMNS`, :data:`SUMMARY_KEYS`,
    :data:`~normdyn.diagnose.lr_curve.LR_CURVE_COLUMNS` for the tables.
    """
    _check_args(model, loss_fn, optimizer)
    if example_input is None:
        example_input = batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 \
            else batch
    snapshot = Snapshot(model, optimizer)
    try:
        return _diagnose(model, batch, loss_fn, optimizer, lrs, example_input, seed, progress,
                         snapshot)
    finally:
        snapshot.restore_all()


def _diagnose(model: nn.Module, batch: Any, loss_fn: Callable[..., Tensor],
              optimizer: torch.optim.Optimizer | None, lrs: Any, example_input: Any, seed: int,
              progress: Callable[[int], None] | None, snapshot: Snapshot) -> Diagnosis:
    verdicts = analyze_scale_invariance(model, example_input)
    if not verdicts:
        raise ValueError("model: no conv or linear layer found (nothing to diagnose)")
    train_invariant = _invariant_in_train_mode(model, example_input)
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    in_optimizer = _optimizer_lrs(optimizer)
    user_lr = None if optimizer is None else float(optimizer.param_groups[0]["lr"])
    described = _describe_optimizer(optimizer)

    # the gradient at the given weights (one forward-backward, in depth order)
    order, handles = _call_order(model, [v.name for v in verdicts])
    try:
        for p in params.values():
            p.grad = None
        torch.manual_seed(seed)
        loss = compute_loss(model, loss_fn, batch)
        loss0 = float(loss.detach())
        if not math.isfinite(loss0):
            raise ValueError(f"loss: the loss at the given weights is {loss0} (not finite)")
        loss.backward()
        del loss
    finally:
        for h in handles:
            h.remove()
    grads0 = {n: p.grad for n, p in params.items()}

    rows = []
    for v in verdicts:
        p = params[v.param_name]
        if not p.requires_grad:
            skip = "frozen (requires_grad=False)"
        elif optimizer is not None and id(p) not in in_optimizer:
            skip = "frozen (not in the optimizer)"
        elif not v.invariant and v.param_name in train_invariant:
            skip = "eval-mode norm: a norm it feeds is in eval() mode and does not normalize"
        elif not v.invariant:
            skip = f"not invariant: {v.reason}"
        else:
            skip = ""
        g = grads0[v.param_name]
        w_norm = float(torch.linalg.vector_norm(p.detach(), dtype=torch.float64))
        g_norm = float(torch.linalg.vector_norm(g.detach(), dtype=torch.float64)) \
            if g is not None else (math.nan if skip else 0.0)
        if not skip and not math.isfinite(g_norm):
            raise ValueError(f"gradient: layer {v.param_name!r} has a non-finite gradient "
                             "at the given weights")
        rows.append({"name": v.param_name, "module_type": type(modules[v.name]).__name__,
                     "norm_type": v.norm_kind or "", "scale_invariant": v.invariant,
                     "skipped": bool(skip), "reason": skip or v.reason,
                     "w_norm": w_norm, "g_norm": g_norm,
                     "order": order.get(v.name, len(verdicts) + len(rows))})
    layers = pd.DataFrame(rows).sort_values("order", kind="stable").reset_index(drop=True)
    layers.insert(0, "layer_id", np.arange(len(layers)))
    layers = layers.drop(columns="order")
    if not (~layers["skipped"]).any():
        raise _nothing_tracked(layers)
    with np.errstate(divide="ignore", invalid="ignore"):
        layers["a"] = np.asarray(gradient_elr.raw(1.0, layers["g_norm"].to_numpy(),
                                                  layers["w_norm"].to_numpy()), dtype=float)
    tracked = ~layers["skipped"].to_numpy()
    dead = np.zeros(len(layers), dtype=bool)
    dead[tracked] = dead_mask(layers["a"].to_numpy()[tracked], layers["g_norm"].to_numpy()[tracked])
    live = tracked & ~dead
    if not live.any():
        raise ValueError(f"model: every one of the {int(tracked.sum())} tracked layer(s) has a "
                         "dead (zero) gradient on this batch")
    a_live = layers["a"].to_numpy()[live]
    eta_pred = critical_lr_of(a_live)
    lr_of = np.array([in_optimizer.get(id(params[n]), eta_pred) for n in layers["name"]])
    with np.errstate(invalid="ignore"):
        layers["elr"] = np.asarray(gradient_elr.raw(lr_of, layers["g_norm"].to_numpy(),
                                                    layers["w_norm"].to_numpy()), dtype=float)

    step_with = optimizer if optimizer is not None else torch.optim.SGD(
        [p for p in params.values() if p.requires_grad], lr=eta_pred)
    live_names = list(layers["name"][live])
    probe = OneStepProbe(model, batch, loss_fn, step_with, snapshot, live_names, grads0, seed)
    probe.step(None)  # one real step at the layers' own lrs
    update = np.full(len(layers), np.nan)
    update[live] = probe.update_norms() / layers["w_norm"].to_numpy()[live]
    update[dead] = 0.0
    layers["update_elr"] = update
    layers["dead"] = dead

    lr_grid = default_lrs(eta_pred) if lrs is None else np.sort(check_positive("lrs", lrs)
                                                              .reshape(-1))
    curve = probe.curve(lr_grid, a_live, progress)
    live_elr = layers["elr"].to_numpy()[live]
    summary = _summary(live_elr, a_live, eta_pred, curve, int(dead.sum()), int(tracked.sum()),
                       len(layers), user_lr, loss0, described, lr_grid)
    return Diagnosis(layers=layers[list(LAYER_COLUMNS)], summary=summary,
                     lr_curve=curve[list(LR_CURVE_COLUMNS)])
