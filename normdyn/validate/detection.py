"""Deprecated alias of :mod:`normdyn.layers.detection` (layer detection moved below both
:mod:`normdyn.optim` and :mod:`normdyn.validate`); kept for one release."""

import warnings

from normdyn.layers.detection import *  # noqa: F403
from normdyn.layers.detection import __all__  # noqa: F401

warnings.warn("normdyn.validate.detection is deprecated; import normdyn.layers.detection",
              DeprecationWarning, stacklevel=2)
