"""Dependencies point one way: the import graph of sbrun/ (every import, function-level ones
included, relative ones resolved) has no cycle; only the entry points import the CLI; the
schema imports nothing of sbrun; samplers never reach the training machinery; and composing a
config needs no CLI import."""
import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

REPO = Path(__file__).resolve().parents[1]


def module_graph(root: Path, package: str = "sbrun") -> Dict[str, Set[str]]:
    """{module: the modules of `package` it imports}, from every import statement in every file
    (inside functions too). `from . import x` depends on the submodule x where x is one, else on
    the package itself; a name under a module counts as that module."""
    files = {}
    for f in (root / package).rglob("*.py"):
        parts = list(f.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        files[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)

    def known(name: str) -> Optional[str]:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, (f, is_pkg) in files.items():
        here = mod if is_pkg else mod.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here.split(".")[:len(here.split(".")) - node.level + 1]) if node.level else ""
                target = ".".join(p for p in (base, node.module) if p)
                names = [f"{target}.{a.name}" if f"{target}.{a.name}" in files else target for a in node.names]
            else:
                continue
            deps |= {d for n in names if n.split(".")[0] == package and (d := known(n)) and d != mod}
        graph[mod] = deps
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as [a, b, ..., a], or [] when the graph is acyclic."""
    state, path = {}, []

    def visit(m: str) -> List[str]:
        state[m] = "open"
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                return path[path.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        state[m] = "done"
        path.pop()
        return []

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return []


def console_script_modules() -> Set[str]:
    """The modules pyproject.toml's [project.scripts] point at."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r'=\s*"([\w.]+):\w+"', section))


@pytest.fixture(scope="module")
def graph():
    return module_graph(REPO)


def test_the_graph_sees_function_level_relative_imports_and_finds_their_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .c import C\n")
    (pkg / "a.py").write_text("import os\nfrom .b import B\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    from .. import a\n")
    g = module_graph(tmp_path, "pkg")
    assert g["pkg.a"] == {"pkg.b"} and g["pkg.b"] == {"pkg.sub.c"} and g["pkg.sub.c"] == {"pkg.a"}
    assert g["pkg.sub"] == {"pkg.sub.c"}
    assert find_cycle(g) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    (pkg / "sub" / "c.py").write_text("def g():\n    from ..b import f\n")      # c -> b -> c
    assert find_cycle(module_graph(tmp_path, "pkg")) == ["pkg.b", "pkg.sub.c", "pkg.b"]
    (pkg / "sub" / "c.py").write_text("import os\n")
    assert find_cycle(module_graph(tmp_path, "pkg")) == []


def test_sbrun_has_no_import_cycle(graph):
    assert len(graph) > 50 and {"sbrun.config", "sbrun.compose", "sbrun.samplers.rho"} <= set(graph)
    assert find_cycle(graph) == []


def test_only_the_entry_points_import_the_cli(graph):
    entry = {"sbrun.cli", "sbrun.__main__"} | console_script_modules()
    assert "sbrun.cli" in entry and "sbrun.plot_cli" in entry
    importers = {m for m, deps in graph.items() if "sbrun.cli" in deps}
    assert "sbrun.__main__" in importers and importers <= entry, importers - entry


def test_the_schema_imports_nothing_of_sbrun_and_build_not_the_loop(graph):
    assert graph["sbrun.config"] == set()
    assert "sbrun.loop" not in graph["sbrun.build"] and "sbrun.build" in graph["sbrun.loop"]


def test_samplers_never_import_the_training_machinery(graph):
    training = {"sbrun.build", "sbrun.fit", "sbrun.state", "sbrun.loop", "sbrun.runner", "sbrun.cli"}
    for mod, deps in graph.items():
        if mod.startswith("sbrun.samplers"):
            assert not deps & training, (mod, deps & training)


def test_composing_a_config_needs_no_cli(tmp_path):
    code = ("import sys\nfrom sbrun.compose import composer, validate\n"
            "with composer() as compose:\n    cfg = validate(compose(['sampler=rho', 'name=x']))\n"
            "assert cfg.sampler.name == 'rho' and 'sbrun.cli' not in sys.modules, sorted(sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
