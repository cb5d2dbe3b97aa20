"""Deprecated alias of :mod:`normdyn.figures.launch`; kept for one release."""

import sys
import warnings

from normdyn.figures import launch as _module

warnings.warn("normdyn.launch is deprecated; import normdyn.figures.launch",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _module
