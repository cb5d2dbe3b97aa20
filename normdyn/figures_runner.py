"""Deprecated alias of :mod:`normdyn.figures.runner`; kept for one release."""

import sys
import warnings

from normdyn.figures import runner as _module

warnings.warn("normdyn.figures_runner is deprecated; import normdyn.figures.runner",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _module
