"""The README's quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "README has no python quickstart"
    namespace: dict = {}
    exec(compile(blocks[0], "README quickstart", "exec"), namespace)
    assert namespace["t"].negatives.shape[:2] == (256, 4096)
    theory: dict = {}
    exec(compile(blocks[1], "README theory", "exec"), theory)
    assert abs(float(theory["T"].population_loss(theory["V"], None, k=4096))
               - theory["T"].etf_loss(10, 4096)) < 1e-9
    assert theory["opt"].converged
