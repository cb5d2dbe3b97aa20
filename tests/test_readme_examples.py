"""The README's usage examples run as written (the ``from normdyn import`` blocks)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    if "from normdyn import" in block
]


def test_readme_has_both_component_examples() -> None:
    joined = "\n".join(BLOCKS)
    assert "CriticalLRWarmup(" in joined and "ConstrainedELR(" in joined


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(block: str, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    assert capsys.readouterr().out.strip()  # each example prints what it measured
