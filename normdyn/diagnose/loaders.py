"""Model specs of ``normdyn diagnose MODEL``: where a model comes from, built without weights.

========================  ==================================================================
spec                      built by
========================  ==================================================================
``torchvision:NAME``      ``torchvision.models.get_model(NAME, weights=None[, num_classes])``
``timm:NAME``             ``timm.create_model(NAME, pretrained=False[, num_classes])``
``hf:PATH``               a *local* ``config.json`` file or directory (nothing is downloaded):
                          ``AutoConfig`` -> ``AutoModelForImageClassification.from_config``,
                          or ``AutoModel.from_config`` for other model types
``normdyn:ARCH``          our architectures: ``resnetN`` / ``resnetN-noshort`` (N = 6n+2),
                          ``mlp`` / ``mlpN`` (N hidden layers, width 64), ``transformer``
``pkg.module:factory``    ``import pkg.module`` and call ``factory()`` with no arguments
========================  ==================================================================

torchvision, timm (``pip install 'normdyn[vision]'``) and transformers (``pip install
'normdyn[hf]'``) are imported only when a spec names them; a missing one is a one-line
:class:`ValueError` naming the extra to install.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["load_model", "parse_shape", "default_input_shape", "EXTRAS"]

EXTRAS = {"torchvision": "vision", "timm": "vision", "transformers": "hf"}
"""The optional package behind each spec prefix and the extra that installs it."""

_NORMDYN = re.compile(r"^(?:resnet(?P<depth>\d+)(?P<noshort>-noshort)?|mlp(?P<mlp>\d+)?"
                      r"|(?P<transformer>transformer))$")


def _optional(package: str) -> Any:
    try:
        return importlib.import_module(package)
    except Exception as exc:  # not installed, or installed against another torch
        why = "is not installed" if isinstance(exc, ModuleNotFoundError) and \
            exc.name == package else f"cannot be imported ({type(exc).__name__}: {exc})"
        raise ValueError(f"model: {package} {why}; pip install 'normdyn[{EXTRAS[package]}]'"
                         ) from None


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3x32x32"`` -> ``(3, 32, 32)``; positive integers separated by ``x``."""
    parts = str(text).lower().split("x")
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--input-shape: expected positive sizes like 3x32x32, got {text!r}")
    return tuple(int(p) for p in parts)


def _normdyn_model(name: str, num_classes: int | None,
                   input_shape: tuple[int, ...] | None) -> nn.Module:
    from normdyn.validate.models import plain_mlp, resnet_cifar, transformer_encoder

    match = _NORMDYN.match(name)
    if match is None:
        raise ValueError(f"model: unknown normdyn architecture {name!r}; use resnetN, "
                         "resnetN-noshort (N = 6n+2, e.g. resnet56-noshort), mlp, mlpN or "
                         "transformer")
    k = num_classes or 10
    if match["depth"]:
        channels = input_shape[0] if input_shape else 3
        return resnet_cifar(int(match["depth"]), shortcuts=not match["noshort"], num_classes=k,
                            in_channels=channels)
    if match["transformer"]:
        seq_len, dim = input_shape if input_shape and len(input_shape) == 2 else (8, 4)
        return transformer_encoder(input_dim=dim, d_model=32, n_heads=4, n_layers=2,
                                   seq_len=seq_len, num_classes=k)
    features = math.prod(input_shape) if input_shape else 3 * 32 * 32
    return plain_mlp(int(match["mlp"] or 8), 64, features, k)


def _hf_model(path: str, num_classes: int | None) -> nn.Module:
    transformers = _optional("transformers")
    where = Path(path)
    if where.is_file():
        values = json.loads(where.read_text(encoding="utf-8"))
        if "model_type" not in values:
            raise ValueError(f"model: {path} has no 'model_type' (not a transformers config)")
        config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    elif where.is_dir():
        config = transformers.AutoConfig.from_pretrained(str(where), local_files_only=True)
    else:
        raise ValueError(f"model: hf:{path} is not a local config.json file or directory "
                         "(nothing is downloaded)")
    if num_classes is not None:
        config.num_labels = num_classes
    try:
        return transformers.AutoModelForImageClassification.from_config(config)
    except ValueError:
        return transformers.AutoModel.from_config(config)


def _factory_model(module_name: str, attr: str) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"model: cannot import {module_name!r} ({exc})") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"model: {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"model: {module_name}:{attr} is not callable")
    return target()


def load_model(spec: str, *, num_classes: int | None = None,
               input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Build the model named by ``spec`` (see the module docstring), randomly initialised.

    ``num_classes`` is passed to builders that take it (``None``: their default);
    ``input_shape`` (without the batch dimension) sizes ``normdyn:`` models.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"model: expected torchvision:NAME, timm:NAME, hf:PATH, normdyn:ARCH "
                         f"or pkg.module:factory, got {spec!r}")
    prefix, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"model: nothing after {prefix + ':'!r} in {spec!r}")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if prefix == "torchvision":
        models = _optional("torchvision").models
        try:
            model = models.get_model(name, weights=None, **kwargs)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"model: torchvision has no model {name!r} ({exc})") from None
    elif prefix == "timm":
        timm = _optional("timm")
        try:
            model = timm.create_model(name, pretrained=False, **kwargs)
        except RuntimeError as exc:
            raise ValueError(f"model: timm has no model {name!r} ({exc})") from None
    elif prefix == "hf":
        model = _hf_model(name, num_classes)
    elif prefix == "normdyn":
        try:
            model = _normdyn_model(name, num_classes, input_shape)
        except ValueError as exc:
            message = str(exc)
            raise ValueError(message if message.startswith("model:")
                             else f"model: {spec}: {message}") from None
    else:
        model = _factory_model(prefix, name)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def default_input_shape(spec: str, model: nn.Module) -> tuple[int, ...]:
    """The input shape used without ``--input-shape``: 3x32x32 for ``normdyn:`` models,
    the config's ``num_channels x image_size x image_size`` for transformers, else 3x224x224."""
    config = getattr(model, "config", None)
    if spec.startswith("normdyn:transformer"):
        return (8, 4)
    if spec.startswith("normdyn:"):
        return (3, 32, 32)
    size = getattr(config, "image_size", None)
    if isinstance(size, int):
        return (int(getattr(config, "num_channels", 3)), size, size)
    return (3, 224, 224)
