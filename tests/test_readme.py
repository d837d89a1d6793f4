"""The README's quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

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


def test_the_registry_example_registers_a_loss_that_trains() -> None:
    from contrastlab.losses.registry import get_loss, unregister_loss
    from contrastlab.train.config import parse_config
    from contrastlab.train.step import contrastive_loss

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    block = next(b for b in blocks if "register_loss(" in b)
    try:
        exec(compile(block, "README registry", "exec"), {})
        assert get_loss("align-uniform").family == "in-batch"
        cfg = parse_config({"loss": {"name": "align-uniform"}, "train": {"batch_size": 8}})
        z = torch.nn.functional.normalize(torch.randn(16, 4, dtype=torch.float64), dim=1)
        value = contrastive_loss(cfg.loss, z[:8], z[8:], torch.zeros(8, dtype=torch.int64))
        assert bool(torch.isfinite(value)) and cfg.loss.temperature == 2.0
    finally:
        unregister_loss("align-uniform")


def _readme_commands() -> list[list[str]]:
    """Every ``contrastlab ...`` line of the README's bash blocks, split as a shell would."""
    import shlex

    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("contrastlab "):
                out.append(shlex.split(line)[1:])
    return out


def test_every_readme_command_parses_and_its_config_validates() -> None:
    """Each command exists with the options it is shown with (their types checked by the
    parser), and a config it names loads with its --set overrides (nothing is run)."""
    import typer.main

    from contrastlab.cli import app
    from contrastlab.train.config import load_config

    group = typer.main.get_command(app)
    commands = _readme_commands()
    assert len(commands) >= 15
    root = README.parent
    for args in commands:
        name, rest = args[0], args[1:]
        with group.make_context("contrastlab", list(args)) as ctx:
            sub = group.get_command(ctx, name)  # type: ignore[attr-defined]
            assert sub is not None, f"unknown command in the README: {name}"
            sub.make_context(name, list(rest), parent=ctx)  # unknown options / bad types raise
        sets = [rest[i + 1] for i, a in enumerate(rest) if a == "--set"]
        for a in rest:
            if a.endswith(".yaml") and (root / a).is_file():
                load_config(root / a, sets)
