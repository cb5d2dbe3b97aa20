"""The package's arrows: optim/ and validate/ stand on layers/, never optim on validate;
the package never imports the checkout's paper_figures/; the old detection path warns."""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "normdyn"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _imports_of(folder: str) -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): _imports(p) for p in (PACKAGE / folder).rglob("*.py")}


def test_optim_and_layers_import_nothing_from_validate():
    for folder in ("optim", "layers"):
        for module, names in _imports_of(folder).items():
            bad = sorted(n for n in names if n == "normdyn.validate" or n.startswith("normdyn.validate."))
            assert not bad, f"{module} imports {bad}"


def test_the_package_never_imports_paper_figures():
    for module, names in _imports_of(".").items():
        bad = sorted(n for n in names if n.split(".")[0] == "paper_figures")
        assert not bad, f"{module} imports {bad}"


def test_old_detection_path_is_a_warning_alias():
    sys.modules.pop("normdyn.validate.detection", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("normdyn.validate.detection")
    assert any(issubclass(w.category, DeprecationWarning) and "normdyn.layers.detection"
               in str(w.message) for w in caught)
    from normdyn.layers import detection

    assert old.find_scale_invariant is detection.find_scale_invariant
