"""The documentation site (mkdocs.yml, docs/): its examples run, its conventions table matches the
loss registry, it cites no internal label, and it builds with warnings as errors.

The Lightning and lightly examples need the ``examples`` extra (in ``make test``'s install; they
are not dependencies of contrastlab) and are skipped without it; the build is skipped without the
``docs`` extra.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
INTERNAL_LABEL = re.compile(r"\bSPEC\s+[A-C]\d")
SNIPPET = re.compile(r'^-{1,3}8<-{1,3}\s+"(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"', re.M)

#: example -> the module it needs beyond contrastlab's own dependencies (None: nothing)
EXAMPLE_NEEDS = {
    "quickstart.py": None,
    "plain_pytorch.py": None,
    "theory_api.py": None,
    "extending.py": None,
    "lightning_module.py": "lightning",
    "lightly_model.py": "lightly",
}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "NO_MKDOCS_2_WARNING": "1", "PYTHONWARNINGS": "ignore"}


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXAMPLE_NEEDS)


@pytest.mark.parametrize("name", sorted(EXAMPLE_NEEDS))
def test_example_runs(name: str) -> None:
    """Each example file runs as a script (in its own process: the extending example registers
    a data set, an encoder and a loss, which must not leak into the other tests)."""
    needs = EXAMPLE_NEEDS[name]
    if needs is not None:
        pytest.importorskip(needs)
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{name} printed nothing"


def test_conventions_table_matches_the_registry() -> None:
    """The page's table is what docs/gen_conventions.py generates from the registry now."""
    gen = _load(DOCS / "gen_conventions.py")
    page = (DOCS / "conventions.md").read_text(encoding="utf-8")
    assert gen.page_table(page) == gen.conventions_table(), (
        "docs/conventions.md is out of date: run python docs/gen_conventions.py")


def test_conventions_table_states_the_registry_defaults() -> None:
    """Independently of the generator: one row per built-in loss, each with the registry's
    temperature and its function's normalization."""
    import inspect

    from contrastlab.losses.registry import get_loss

    gen = _load(DOCS / "gen_conventions.py")
    rows, why = {}, {}
    for line in gen.page_table((DOCS / "conventions.md").read_text(encoding="utf-8")).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) == 8 and cells[0] != "`loss.name`":
            rows[cells[0].strip("`")] = cells
        elif m := re.match(r"- \*\*`([\w-]+)`\*\*: (.+)", line):
            why[m[1]] = m[2]
    assert list(rows) == list(why) == gen.built_in_names()
    assert set(rows) == {"infonce", "supcon", "debiased-hard", "nce", "scl", "hscl", "ucl",
                         "hucl"}
    for name, cells in rows.items():
        spec = get_loss(name)
        fn = gen.FUNCTIONS[name]
        assert cells[1] == f"`{fn.__name__}`"
        assert float(cells[4].split()[0]) == spec.default("temperature"), name
        norm = inspect.signature(fn).parameters.get("normalize")
        assert cells[5] == f"`{norm.default if norm is not None else 'none'}`", name
        assert f"t = {spec.default('temperature'):g}" in why[name], name
        assert cells[5] in why[name], name
    # the published conventions the page explains
    assert (rows["infonce"][4], rows["infonce"][5]) == ("0.5", "`sphere`")
    assert (rows["supcon"][4], rows["supcon"][5]) == ("0.1", "`sphere`")
    assert (rows["hscl"][4], rows["hscl"][5]) == ("1", "`ball`")


def test_pages_cite_no_internal_label_and_their_snippets_exist() -> None:
    pages = sorted(DOCS.rglob("*.md"))
    assert len(pages) >= 14
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not INTERNAL_LABEL.search(text), f"{page.name} cites an internal label"
        for m in SNIPPET.finditer(text):
            target = ROOT / m["path"]
            assert target.is_file(), f"{page.name}: {m['path']} does not exist"
            if m["section"]:
                source = target.read_text(encoding="utf-8")
                for marker in ("start", "end"):
                    assert f"--8<-- [{marker}:{m['section']}]" in source, (
                        f"{page.name}: no section {m['section']!r} in {m['path']}")
    hooks = _load(DOCS / "hooks.py")
    for docstring_text, want in [
        ("the simplex ETF (SPEC A7).", "the simplex ETF."),
        ("(SPEC A2; Arora et al. 2019)", "(Arora et al. 2019)"),
        ("(Arora et al. 2019; SPEC A1), where", "(Arora et al. 2019), where"),
        ("Chen et al. 2020 (SimCLR NT-Xent), SPEC A1", "Chen et al. 2020 (SimCLR NT-Xent)"),
        ("losses (SPEC A1-A3, A7).", "losses."),
    ]:
        assert hooks.strip_internal_labels(docstring_text) == want


def test_site_builds_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` (what ``make docs`` runs): no warning, no internal label and no
    raw reST role in the built pages (the API reference is rendered from the docstrings)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "WARNING" not in done.stderr, done.stderr[-4000:]
    pages = sorted(site.rglob("*.html"))
    assert (site / "api" / "losses" / "index.html").is_file()
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not INTERNAL_LABEL.search(text), f"{page.relative_to(site)} cites an internal label"
        assert ":func:<code>" not in text, page.relative_to(site)
    losses = (site / "api" / "losses" / "index.html").read_text(encoding="utf-8")
    assert 'id="contrastlab.losses.info_nce"' in losses
    own_loop = (site / "own-loop" / "index.html").read_text(encoding="utf-8")
    assert "NTXentLoss" in own_loop and "training_step" in own_loop  # the included examples


def test_sources_cite_no_internal_label() -> None:
    """The library's docstrings, comments, help, recipe texts, configs and docs cite the papers,
    not the labels of the internal design document (docs/hooks.py strips those on the site), the
    project's seed files or its issue tracker."""
    label = re.compile(r"\bSPEC [A-D]\d|\bseeds/00\d|\b[Ii]ssue \d+\b")
    files = [p for pattern in ("*.py", "*.yaml", "*.md")
             for p in (ROOT / "src" / "contrastlab").rglob(pattern)]
    files += [p for folder in (ROOT / "configs", DOCS) for p in folder.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p != DOCS / "hooks.py"]
    assert len(files) > 50
    found = [f"{p.relative_to(ROOT)}:{n}" for p in files
             for n, line in enumerate(p.read_text("utf-8", "replace").splitlines(), 1)
             if label.search(line)]
    assert not found, f"internal labels: {found}"
