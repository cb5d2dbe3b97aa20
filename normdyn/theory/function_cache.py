r"""On-disk cache of the generated numeric functions, so that importing them needs no SymPy.

Deriving the expressions of :mod:`normdyn.theory.generation` and lambdifying them takes
seconds; their generated Python source does not change unless the theory does.  In the
spirit of numba's ``cache=True`` the source is written once to
``<cache dir>/numeric-<key>.json`` and later processes ``exec`` it (in a namespace holding
only the numpy/math/builtins names it reads) without importing SymPy.

The *key* hashes every ``normdyn/theory/*.py`` source, SymPy's version file (located, not
imported) and the Python version: editing a derivation, upgrading SymPy or changing
Python re-derives.  The cache directory is ``$NORMDYN_CACHE``, else
``$XDG_CACHE_HOME/normdyn`` or ``~/.cache/normdyn``, else a directory under the system's
temporary directory; writes are atomic (temporary file + ``os.replace``).  A cache file
that does not parse, has the wrong key or whose functions do not exec with the stated
arguments is ignored and rewritten.  Nothing in the file is hand-written: it is what
:func:`~normdyn.theory.generation.generate_sources` printed.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib.util
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "cache_key", "cache_dir", "cache_path", "load_sources", "build_function",
           "LoadResult"]

#: Version of the cache file's layout (part of the key).
FORMAT = 1

_THEORY_DIR = Path(__file__).resolve().parent
_MODULES = {"numpy": np, "math": math, "builtins": builtins}


def _sympy_version_text() -> bytes:
    spec = importlib.util.find_spec("sympy")
    if spec is None or not spec.submodule_search_locations:
        return b"no sympy"
    release = Path(next(iter(spec.submodule_search_locations))) / "release.py"
    try:
        return release.read_bytes()
    except OSError:
        return b"sympy without release.py"


def cache_key() -> str:
    """Hash of the theory sources, SymPy's version, the Python version and :data:`FORMAT`."""
    h = hashlib.sha256()
    h.update(f"format {FORMAT}\n{sys.implementation.name} {sys.version}\n".encode())
    h.update(_sympy_version_text())
    for path in sorted(_THEORY_DIR.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:32]


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def cache_dir() -> Path:
    """The first writable of ``$NORMDYN_CACHE``, the user cache and the temporary directory."""
    env = os.environ.get("NORMDYN_CACHE")
    xdg = os.environ.get("XDG_CACHE_HOME")
    candidates = [Path(env)] if env else []
    candidates.append((Path(xdg) if xdg else Path.home() / ".cache") / "normdyn")
    for directory in candidates:
        if _writable(directory):
            return directory
    return Path(tempfile.gettempdir()) / f"normdyn-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"


def cache_path(key: str | None = None) -> Path:
    return cache_dir() / f"numeric-{key or cache_key()}.json"


def build_function(entry: dict, kind: str) -> Callable:
    """``exec`` one cached source (``kind`` ``"raw"`` or ``"scalar"``) into a function.

    Raises ``ValueError`` if the entry is malformed or the function's parameters are not
    the entry's ``arg_names``.
    """
    part = entry[kind]
    source, names = part["source"], part["names"]
    if not isinstance(source, str) or not isinstance(names, dict):
        raise ValueError(f"{kind}: malformed cache entry")
    namespace: dict[str, object] = {"__builtins__": builtins}
    for name, module in names.items():
        if module not in _MODULES:
            raise ValueError(f"{kind}: name {name!r} from an unknown module {module!r}")
        namespace[name] = getattr(_MODULES[module], name)
    local: dict[str, object] = {}
    exec(compile(source, f"<normdyn generated {kind}>", "exec"), namespace, local)  # noqa: S102
    fns = [v for v in local.values() if callable(v)]
    if len(fns) != 1:
        raise ValueError(f"{kind}: expected one function in the cached source, got {len(fns)}")
    fn = fns[0]
    code = fn.__code__
    if list(code.co_varnames[:code.co_argcount]) != list(entry["arg_names"]):
        raise ValueError(f"{kind}: parameters {code.co_varnames[:code.co_argcount]} differ "
                         f"from {entry['arg_names']}")
    fn.__globals__.update({k: v for k, v in namespace.items() if k != "__builtins__"})
    return fn


class LoadResult:
    """The cached sources and where they came from: ``"cache"`` or ``"derived"``."""

    def __init__(self, sources: dict[str, dict], origin: str, path: Path) -> None:
        self.sources, self.origin, self.path = sources, origin, path


def _read(path: Path, key: str) -> dict[str, dict] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("key") != key or doc.get("format") != FORMAT:
            return None
        functions = doc["functions"]
        for entry in functions.values():  # every entry must build
            build_function(entry, "raw")
            build_function(entry, "scalar")
        return functions
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SyntaxError, NameError):
        return None


def _write(path: Path, key: str, functions: dict[str, dict]) -> None:
    text = json.dumps({"format": FORMAT, "key": key, "functions": functions})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # an unwritable cache only costs the next process a derivation


def load_sources(*, use_cache: bool = True) -> LoadResult:
    """The generated sources: from the cache file when it is valid, else derived (and stored)."""
    key = cache_key()
    path = cache_path(key)
    if use_cache and os.environ.get("NORMDYN_NO_CACHE", "") not in ("1", "true"):
        functions = _read(path, key)
        if functions is not None:
            return LoadResult(functions, "cache", path)
    from normdyn.theory.generation import generate_sources

    functions = generate_sources()
    _write(path, key, functions)
    return LoadResult(functions, "derived", path)
