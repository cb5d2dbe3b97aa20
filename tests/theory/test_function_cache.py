"""The on-disk cache of the generated numeric functions and the import graph of theory/.

Oracles: a fresh SymPy derivation (``generate_sources`` + lambdify in this process) for
the cached functions; ``ast`` over the sources for the import graph; a subprocess's
``sys.modules`` for "no SymPy at import".
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from normdyn.theory import function_cache as fc

THEORY = Path(__file__).resolve().parents[2] / "normdyn" / "theory"


@pytest.fixture(scope="module")
def fresh_sources() -> dict:
    from normdyn.theory.generation import generate_sources

    return generate_sources()


def _positive_inputs(rng: np.random.Generator, entry: dict) -> list[np.ndarray]:
    out = []
    for dom in entry["domains"]:
        if dom == "unit":
            out.append(rng.uniform(0.0, 0.5, 64))
        elif dom == "at_least_one":
            out.append(rng.uniform(1.0, 100.0, 64))
        else:
            out.append(10.0 ** rng.uniform(-3, -0.4, 64))
    return out


def test_cached_functions_equal_a_fresh_derivation_on_random_inputs(tmp_path, monkeypatch,
                                                                    fresh_sources):
    monkeypatch.setenv("NORMDYN_CACHE", str(tmp_path))
    first = fc.load_sources()
    assert first.origin == "derived" and first.path.parent == tmp_path and first.path.exists()
    second = fc.load_sources()
    assert second.origin == "cache"
    assert set(second.sources) == set(fresh_sources)
    rng = np.random.default_rng(0)
    import sympy as sp

    from normdyn.theory.generation import specs

    for name, entry in second.sources.items():
        spec = specs()[name]
        raw = fc.build_function(entry, "raw")
        scalar = fc.build_function(entry, "scalar")
        fresh = sp.lambdify(spec.args, spec.compiled_expr, modules="numpy", cse=True)
        xs = _positive_inputs(rng, entry)
        with np.errstate(all="ignore"):
            got, want = np.asarray(raw(*xs)), np.asarray(fresh(*xs))
        np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape), err_msg=name)
        point = [float(x[0]) for x in xs]
        assert scalar(*point) == pytest.approx(float(np.broadcast_to(want, got.shape)[0]),
                                               rel=1e-13, nan_ok=True), name


def test_a_changed_key_re_derives(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMDYN_CACHE", str(tmp_path))
    assert fc.load_sources().origin in ("derived", "cache")
    monkeypatch.setattr(fc, "cache_key", lambda: "0" * 32)
    changed = fc.load_sources()
    assert changed.origin == "derived" and changed.path.name == f"numeric-{'0' * 32}.json"
    assert fc.load_sources().origin == "cache"


def test_the_key_depends_on_the_theory_sources(monkeypatch, tmp_path):
    before = fc.cache_key()
    fake = tmp_path / "theory"
    fake.mkdir()
    for p in THEORY.glob("*.py"):
        (fake / p.name).write_bytes(p.read_bytes())
    monkeypatch.setattr(fc, "_THEORY_DIR", fake)
    assert fc.cache_key() == before
    (fake / "norm_dynamics.py").write_text((fake / "norm_dynamics.py").read_text() + "\n# edit\n")
    assert fc.cache_key() != before


@pytest.mark.parametrize("corruption", ["not json", "truncated", "bad source", "bad args",
                                        "foreign module"])
def test_a_corrupted_cache_file_is_ignored_and_rewritten(tmp_path, monkeypatch, corruption):
    monkeypatch.setenv("NORMDYN_CACHE", str(tmp_path))
    path = fc.load_sources().path
    text = path.read_text()
    doc = json.loads(text)
    entry = doc["functions"]["elr_map"]
    if corruption == "not json":
        path.write_text("{ garbage")
    elif corruption == "truncated":
        path.write_text(text[: len(text) // 2])
    else:
        if corruption == "bad source":
            entry["raw"]["source"] = "def _lambdifygenerated(E):\n    return (\n"
        elif corruption == "bad args":
            entry["raw"]["source"] = entry["raw"]["source"].replace("(E)", "(X)", 1)
        else:
            entry["raw"]["names"] = {"system": "os"}
        path.write_text(json.dumps(doc))
    again = fc.load_sources()
    assert again.origin == "derived"
    assert json.loads(path.read_text()) == json.loads(text)  # rewritten with the derivation


def test_unwritable_cache_dir_falls_back(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NORMDYN_CACHE", str(blocker / "sub"))  # cannot be created
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "sub2"))
    monkeypatch.setenv("HOME", str(blocker))
    assert fc.cache_dir().name.startswith("normdyn-cache")


def test_import_with_a_warm_cache_does_not_import_sympy(tmp_path):
    env = dict(os.environ, NORMDYN_CACHE=str(tmp_path), OMP_NUM_THREADS="1")
    code = ("import sys, normdyn.simulate, normdyn.theory.numeric as N; "
            "print(N.SOURCE_ORIGIN, 'sympy' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    second = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                            capture_output=True, text=True).stdout.split()
    assert first == ["derived", "True"]
    assert second == ["cache", "False"]


def _theory_imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in THEORY.glob("*.py"):
        mod = f"normdyn.theory.{path.stem}" if path.stem != "__init__" else "normdyn.theory"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports too
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "normdyn.theory":
                    deps |= {f"normdyn.theory.{a.name}" for a in node.names}
                elif node.module.startswith("normdyn.theory."):
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("normdyn.theory.")}
        graph[mod] = deps - {mod}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_theory_has_no_import_cycle():
    graph = _theory_imports()
    assert "normdyn.theory.registry" in graph and not graph["normdyn.theory.registry"]
    assert _cycle(graph) is None, _cycle(graph)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
