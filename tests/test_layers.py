"""The import graph of ledgerlm, read from the source with `ast` (nothing is imported or run).

Three rules (docs/ARCHITECTURE.md, "Layers"):
  (a) no `import` inside a function, except of an optional or heavy third-party dependency (LAZY_OK): a lazy
      import of our own module hides an arrow of the graph;
  (b) no cycle among ledgerlm modules (lazy imports count: they are arrows too);
  (c) arrows only point down or sideways in LAYERS, never up.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "ledgerlm"
ROOT = Path(__file__).resolve().parents[1]

# The layer map, lowest first. A module belongs to the longest prefix listed; "ledgerlm" alone is the package's
# __init__. No single file is listed apart from its folder: a module lives in the floor of its folder.
LAYERS = [
    # tasks and shared pieces
    ["ledgerlm", "ledgerlm.tasks", "ledgerlm.io", "ledgerlm.ledger", "ledgerlm.config", "ledgerlm.device",
     "ledgerlm.progress", "ledgerlm.hub", "ledgerlm.stage", "ledgerlm.card", "ledgerlm.estimate"],
    # data and model, the parts stages share (components/), demo/ (the built-in corpus data/ reads as a source) and
    # rehearsal/ (the generated Hub mirror of the rehearsal recipe)
    ["ledgerlm.data", "ledgerlm.model", "ledgerlm.components", "ledgerlm.demo", "ledgerlm.rehearsal"],
    # stages
    ["ledgerlm.train", "ledgerlm.post", "ledgerlm.eval", "ledgerlm.report"],
    # the pipeline and the tools built on it (samples: the pipeline's sample generations after a model stage)
    ["ledgerlm.pipeline", "ledgerlm.recipe", "ledgerlm.plan", "ledgerlm.sweep", "ledgerlm.samples", "ledgerlm.audit"],
    # the command line
    ["ledgerlm.cli", "ledgerlm.__main__"],
]  # fmt: skip

# Third-party modules that may be imported inside a function: optional extras (a user may not have them) and heavy
# imports only some commands need. Prefixes of the dotted name.
LAZY_OK = {
    "transformers", "datasets", "huggingface_hub", "ray", "wandb", "trackio", "lm_eval", "datasketch", "matplotlib",
    "tensorboard", "datatrove", "scipy",
    "torch.utils.tensorboard",  # = tensorboard (torch's writer imports the tensorboard package)
    "fasttext",  # optional: the fastText quality classifier, not a dependency
    "torch.distributed",  # not in every torch build; only multi-process training needs it
}  # fmt: skip

@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a ledgerlm module, or the dotted third-party name)
    lazy: bool  # inside a function
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def scan(root: Path) -> tuple[set[str], list[Import]]:
    """Every module under root/ledgerlm and every import statement in it."""
    files = {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}
    imports = []
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        imports += _imports(ast.parse(path.read_text(), str(path)), mod, is_pkg, set(files))
    return set(files), imports


def _imports(tree: ast.AST, mod: str, is_pkg: bool, modules: set[str]) -> list[Import]:
    found = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(mod, a.name, lazy, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child, mod, is_pkg)
                for a in child.names:  # `from pkg import module` imports the module, `from m import name` m
                    target = f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    found.append(Import(mod, target, lazy, child.lineno))
            visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    # `import ledgerlm.x.y` names a module; `from ledgerlm.x import y` may name a function: keep module targets
    return [i for i in found if not _ours(i.target) or i.target in modules or _fail(i)]


def _absolute(node: ast.ImportFrom, mod: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
    return ".".join(parts + ([node.module] if node.module else []))


def _fail(i: Import) -> bool:
    raise AssertionError(f"{i.source}:{i.line} imports {i.target}, which is not a module of the package")


def _ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def layer_of(module: str, layers: list[list[str]] = LAYERS) -> int | None:
    """The layer of the longest listed prefix of `module` ("ledgerlm" itself only for the package's __init__)."""
    best, best_len = None, -1
    for i, names in enumerate(layers):
        for name in names:
            matches = module == name or (name != PACKAGE and module.startswith(name + "."))
            if matches and len(name) > best_len:
                best, best_len = i, len(name)
    return best


def violations(modules: set[str], imports: list[Import]) -> set[str]:
    """Every broken rule, one string each: "a: lazy import b", "a -> b" (upward), "cycle: a -> b -> a",
    "a: no layer"."""
    found = {f"{m}: no layer" for m in modules if layer_of(m) is None}
    for i in imports:
        if i.lazy and (_ours(i.target) or not _lazy_ok(i.target)):
            found.add(f"{i.source}: lazy import {i.target}")
        if _ours(i.target) and i.target != i.source:
            src, dst = layer_of(i.source), layer_of(i.target)
            if src is not None and dst is not None and dst > src:
                found.add(f"{i.source} -> {i.target}")
    arrows = {(i.source, i.target) for i in imports if _ours(i.target) and i.target != i.source}
    found |= {"cycle: " + " -> ".join(c) for c in cycles(arrows)}
    return found


def _lazy_ok(name: str) -> bool:
    return any(name == ok or name.startswith(ok + ".") for ok in LAZY_OK)


def cycles(arrows: set[tuple[str, str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a closed path."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(arrows):
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_path_within(graph, comp) for comp in components]


def _path_within(graph: dict[str, list[str]], component: set[str]) -> list[str]:
    """A shortest closed path through the component, from its first module back to it (breadth-first)."""
    start = min(component)
    came_from: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph[v]:
                if w == start:
                    path = [v]
                    while came_from[path[-1]] is not None:
                        path.append(came_from[path[-1]])
                    return path[::-1] + [start]
                if w in component and w not in came_from:
                    came_from[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {sorted(component)}")


# ------------------------------------------------------------------------------------------------- the real tree


@pytest.fixture(scope="module")
def found() -> set[str]:
    return violations(*scan(ROOT))


def test_every_module_has_a_layer(found):
    assert sorted(v for v in found if v.endswith(": no layer")) == [], "add the module to LAYERS"


def test_no_lazy_imports(found):
    new = sorted(v for v in found if ": lazy import " in v)
    assert new == [], "import at the top of the module (a cycle means the code is in the wrong layer):\n" + "\n".join(
        new
    )


def test_no_upward_arrows(found):
    new = sorted(v for v in found if " -> " in v and not v.startswith("cycle: "))
    assert new == [], "a lower layer imports a higher one (LAYERS):\n" + "\n".join(new)


def test_no_cycles(found):
    new = sorted(v for v in found if v.startswith("cycle: "))
    assert new == [], "modules that import each other (one of them is in the wrong layer):\n" + "\n".join(new)


# ------------------------------------------------------------------------------------- the checker on a toy tree


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "__init__.py": "",
    "io.py": "import json\n",
    "data/__init__.py": "",
    "data/shards.py": "from ledgerlm.io import x\nimport numpy as np\n",
    "post/__init__.py": "",
    "post/sft.py": "from ledgerlm.data import shards\n\ndef f():\n    import transformers\n    import torch.distributed\n",
    "pipeline.py": "from ledgerlm.post.sft import run\nfrom . import io\n",
    "cli.py": "import ledgerlm.pipeline\n",
}


def test_checker_passes_a_clean_tree(tmp_path):
    modules, imports = scan(_tree(tmp_path, CLEAN))
    assert modules == {"ledgerlm", "ledgerlm.io", "ledgerlm.data", "ledgerlm.data.shards", "ledgerlm.post",
                       "ledgerlm.post.sft", "ledgerlm.pipeline", "ledgerlm.cli"}  # fmt: skip
    assert {(i.source, i.target) for i in imports if _ours(i.target)} == {
        ("ledgerlm.data.shards", "ledgerlm.io"),
        ("ledgerlm.post.sft", "ledgerlm.data.shards"),
        ("ledgerlm.pipeline", "ledgerlm.post.sft"),
        ("ledgerlm.pipeline", "ledgerlm.io"),
        ("ledgerlm.cli", "ledgerlm.pipeline"),
    }
    assert violations(modules, imports) == set()


def test_checker_finds_each_new_violation(tmp_path):
    bad = dict(CLEAN)
    bad["io.py"] = "import json\n\ndef load():\n    from ledgerlm.data.shards import x\n"  # lazy + upward + cycle
    bad["post/sft.py"] = "from ledgerlm import pipeline\n\nclass A:\n    def f(self):\n        import zstandard\n"
    bad["extra.py"] = ""  # not in LAYERS
    modules, imports = scan(_tree(tmp_path, bad))
    assert violations(modules, imports) == {
        "ledgerlm.io: lazy import ledgerlm.data.shards",
        "ledgerlm.io -> ledgerlm.data.shards",
        "cycle: ledgerlm.data.shards -> ledgerlm.io -> ledgerlm.data.shards",
        "ledgerlm.post.sft: lazy import zstandard",
        "ledgerlm.post.sft -> ledgerlm.pipeline",
        "cycle: ledgerlm.pipeline -> ledgerlm.post.sft -> ledgerlm.pipeline",
        "ledgerlm.extra: no layer",
    }


def test_checker_names_a_missing_module(tmp_path):
    bad = dict(CLEAN, **{"cli.py": "from ledgerlm.gone import f\n"})
    with pytest.raises(AssertionError, match=r"ledgerlm.cli:1 imports ledgerlm.gone"):
        scan(_tree(tmp_path, bad))
