"""The architecture rules of contrastlab, checked on the source with ``ast`` (issue 15).

1. No import cycle between the package's modules (imports inside functions count).
2. No import of a private name (``_x``) from another module.
3. Dependencies point one way, down the layers of :data:`RANK`: the shared helpers, then
   ``distributed`` (gathering only), the library (``losses``, ``theory``, ``data``), what builds on
   it (models, geometry, evaluation), the trainer, ``experiments``, ``report``/``recipes`` and the
   command line; no module imports one of a higher layer.
4. No function longer than 80 lines.
5. No repeated block: no 6 consecutive lines of code or docstring repeated, in one module or
   two, up to the one-line strings and numbers in the code (:func:`_repeated_blocks`; docstring
   lines compare by their text). Parameter lists, imports,
   ``__all__`` and constant tables do not count: a family of public functions with the same
   arguments (a loss, its tiled and its fused kernel) keeps explicit signatures. The one
   exception, :data:`REPEATED_BLOCKS_ALLOWED`, is the four public members of Jiang et al.'s
   family (``scl``, ``hscl``, ``ucl``, ``hucl``), each one call of ``family_loss``.

Since the renovation of issue 15 every rule holds, with the one exception of rule 5 named there:
any violation fails.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "contrastlab"
PACKAGE = "contrastlab"
#: the layer of each top-level module or subpackage (lower numbers lower); unlisted: 3
RANK = {
    "_validation": 0, "_yaml": 0, "_paths": 0, "_tables": 0, "_plugins": 0, "_progress": 0,
    "distributed": 1,
    "losses": 2, "theory": 2, "data": 2,
    "models": 3, "geometry": 3, "evaluation": 3, "convergence": 3, "checkpoint": 3,
    "train": 4,
    "experiments": 5,
    "report": 6, "recipes": 6, "demo": 6,
    "cli": 7, "__main__": 8, "": 8,
}
MAX_LINES = 80
#: lines of a repeated block (the ``duplicates`` tool's threshold)
BLOCK = 6
#: the functions allowed to repeat a block, by module pair (see rule 5)
REPEATED_BLOCKS_ALLOWED = {("losses/scl.py", "losses/scl.py"): {"scl", "hscl", "ucl", "hucl"}}


def _short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(mods: dict[str, Path]) -> dict[str, set[tuple[str, str | None]]]:
    """module -> {(imported module, imported name or None)} for every contrastlab import."""
    out: dict[str, set[tuple[str, str | None]]] = defaultdict(set)
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == PACKAGE:
                        out[name].add((a.name, None))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, is_pkg, node)
                if target.split(".")[0] != PACKAGE:
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:  # `from contrastlab.x import module`
                        out[name].add((sub, None))
                    else:
                        out[name].add((target, a.name))
    return out


def _private_attributes(mods: dict[str, Path]) -> set[tuple[str, str]]:
    """(module, target.name) for every ``alias._name`` where ``alias`` is another module of the
    package bound by ``import contrastlab.x as alias`` or ``from contrastlab import x as alias``
    (a private name reached through the module object, not imported by name)."""
    out: set[tuple[str, str]] = set()
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods and a.asname:
                        aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, is_pkg, node)
                for a in node.names:
                    if f"{target}.{a.name}" in mods:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__") and aliases[node.value.id] != name):
                out.add((name, f"{aliases[node.value.id]}.{node.attr}"))
    return out


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for src, targets in _imports(mods).items():
        for target, _ in targets:
            # importing a.b.c runs a and a.b too; an edge to the deepest existing module
            while target not in mods and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in mods and target != src and not src.startswith(target + "."):
                graph[src].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: set[frozenset[str]] = set()
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.add(frozenset(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def _rank(module: str) -> int:
    parts = module.split(".")
    return RANK.get(parts[1] if len(parts) > 1 else "", 3)


def test_no_import_cycles() -> None:
    found = {frozenset(_short(m) for m in c) for c in _cycles(_edges(_modules()))}
    assert found == set(), f"import cycles: {found}"


def test_no_private_names_imported_across_modules() -> None:
    mods = _modules()
    found = {(_short(src), _short(f"{target}.{name}"))
             for src, targets in _imports(mods).items()
             for target, name in targets
             if name is not None and name.startswith("_") and not name.startswith("__")
             and target != src}
    found |= {(_short(src), _short(attr)) for src, attr in _private_attributes(mods)}
    assert found == set(), f"private names of other modules: {sorted(found)}"


def test_dependencies_point_one_way() -> None:
    graph = _edges(_modules())
    found = {(_short(src), _short(dst)) for src, dsts in graph.items() for dst in dsts
             if _rank(dst) > _rank(src)}
    assert found == set(), f"upward imports: {sorted(found)}"


def test_no_function_over_80_lines() -> None:
    found = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > MAX_LINES:
                    found.add(_short(f"{name}.{node.name}"))
    assert found == set(), f"over {MAX_LINES} lines: {sorted(found)}"


def _skipped_lines(tree: ast.Module) -> set[int]:
    """The lines rule 5 does not read: decorators and parameter lists, imports, ``__all__``,
    and dict literals of constants (tables)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        first, last = getattr(node, "lineno", 0), getattr(node, "end_lineno", 0) or 0
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            last = node.body[0].lineno - 1
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if not any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                continue
        elif isinstance(node, ast.Dict):
            if not all(isinstance(x, ast.Constant) for x in [*node.keys, *node.values]):
                continue
        elif not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        skip.update(range(first, last + 1))
    return skip


def _shape_words(text: str) -> dict[int, list[str]]:
    """The words of each line: its tokens, a one-line string as ``S`` (an f-string too, on any
    Python version), a number as ``0``, no comment; each line of a multi-line string (a
    docstring) as its own text, so that repeated prose is seen."""
    words: dict[int, list[str]] = defaultdict(list)
    ignored = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
               tokenize.ENDMARKER}
    f_start = getattr(tokenize, "FSTRING_START", -1)  # Python >= 3.12 splits f-strings
    f_end = getattr(tokenize, "FSTRING_END", -1)
    depth = 0
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == f_start:
            if depth == 0:
                words[tok.start[0]].append("S")
            depth += 1
            continue
        if tok.type == f_end:
            depth -= 1
            continue
        if depth > 0 or tok.type in ignored:
            continue
        if tok.type == tokenize.STRING and tok.start[0] != tok.end[0]:
            for i, line in enumerate(tok.string.splitlines()):
                words[tok.start[0] + i].extend(line.split())
        else:
            words[tok.start[0]].append(
                {tokenize.STRING: "S", tokenize.NUMBER: "0"}.get(tok.type, tok.string))
    return words


def _runs(text: str) -> list[list[tuple[int, str]]]:
    """The runs of lines rule 5 reads, as (line number, shape): a run ends where a skipped
    region (a signature, an import, ...) lies between two read lines, so that no block spans two
    functions."""
    skip = _skipped_lines(ast.parse(text))
    runs: list[list[tuple[int, str]]] = [[]]
    last = 0
    for i, words in sorted(_shape_words(text).items()):
        if i in skip:
            continue
        if runs[-1] and any(j in skip for j in range(last + 1, i)):
            runs.append([])
        runs[-1].append((i, " ".join(words)))
        last = i
    return [r for r in runs if r]


def _repeated_blocks(files: dict[str, str]) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """The pairs of modules (a module with itself included) that share a block of
    :data:`BLOCK` consecutive read lines, with the first lines of each shared block. A block of
    one line repeated, or with fewer than 3 lines of 4 words or more, does not count."""
    where: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for name, text in files.items():
        for lines in _runs(text):
            for j in range(len(lines) - BLOCK + 1):
                block = tuple(s for _, s in lines[j:j + BLOCK])
                if len(set(block)) > 1 and sum(len(s.split()) >= 4 for s in block) >= 3:
                    where[block].append((name, lines[j][0]))
    pairs: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for places in where.values():
        for a, (fa, la) in enumerate(places):
            for fb, lb in places[a + 1:]:
                if fa != fb or abs(la - lb) >= BLOCK:
                    key = (fa, fb) if fa <= fb else (fb, fa)
                    pairs[key].append((la, lb) if fa <= fb else (lb, la))
    return dict(pairs)


def _function_at(text: str, line: int) -> str | None:
    """The name of the innermost function of ``text`` holding ``line``."""
    found = None
    for node in ast.walk(ast.parse(text)):
        if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.lineno <= line <= (node.end_lineno or 0)):
            if found is None or node.lineno > found[0]:
                found = (node.lineno, node.name)
    return found[1] if found else None


def test_no_repeated_block() -> None:
    files = {str(p.relative_to(SRC)): p.read_text() for p in sorted(SRC.rglob("*.py"))}
    found = {}
    for (fa, fb), lines in _repeated_blocks(files).items():
        allowed = REPEATED_BLOCKS_ALLOWED.get((fa, fb), set())
        left = [(la, lb) for la, lb in lines
                if not {_function_at(files[fa], la), _function_at(files[fb], lb)} <= allowed]
        if left:
            found[(fa, fb)] = left[:3]
    assert found == {}, f"repeated blocks (module pair: first lines): {found}"


def test_the_checker_sees_a_repeated_block() -> None:
    body = "".join(f"    x{i} = compute({i}, 'a', y + {i})\n" for i in range(6))
    a = f"import os\n\n\ndef f(y):\n{body}    return x0\n"
    b = a.replace("def f(y)", "def g(y, z=1)").replace("'a'", "'b'").replace("(3,", "(7,")
    assert _repeated_blocks({"a.py": a, "b.py": b}) == {("a.py", "b.py"): [(5, 5), (6, 6)]}
    c = a.replace("x4 = compute", "x4 = other")  # one line differs in a name: no block of 6
    assert _repeated_blocks({"a.py": a, "c.py": c}) == {}
    signature = "def h(\n" + "".join(f"    p{i}: int = {i},\n" for i in range(8)) + "):\n"
    assert _repeated_blocks({"a.py": signature + "    pass\n",
                             "b.py": signature.replace("h(", "k(") + "    return 1\n"}) == {}
    prose = "".join(f"    line {i} of a paragraph said twice\n" for i in range(6))
    doc = f'def f():\n    """One.\n\n{prose}    """\n\n\ndef g():\n    """Two.\n\n{prose}    """\n'
    assert list(_repeated_blocks({"a.py": doc})) == [("a.py", "a.py")]
    # two short functions repeated, with other names: no block spans a signature
    pair = "".join(f"def f{j}(y):\n    a = y + {j}\n    b = a * y\n    return a, b\n\n\n"
                   for j in range(2))
    assert _repeated_blocks({"a.py": pair, "b.py": pair.replace("def f", "def g")}) == {}


def test_the_checker_sees_a_cycle() -> None:
    # the checker itself can fail: a two-module cycle and a private import are found
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == {frozenset({"a", "b"})}


def test_the_checker_sees_a_private_name_reached_through_a_module(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("X = 1\n_y = 2\n")
    (tmp_path / "b.py").write_text("from contrastlab import a as m\nimport contrastlab.a as n\n"
                                   "print(m._y, n._y, m.X, m.__name__)\n")
    mods = {"contrastlab.a": tmp_path / "a.py", "contrastlab.b": tmp_path / "b.py"}
    assert _private_attributes(mods) == {("contrastlab.b", "contrastlab.a._y")}
