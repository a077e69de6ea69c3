"""The package's structure: layers that import only downwards, explicit registration, one training loop,
and no reference to documents outside the repository."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import fedlada

SRC = Path(fedlada.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in SRC.rglob("*.py")}
PACKAGES = {_module(p) for p in SRC.rglob("__init__.py")}


def _unit(module: str) -> str:
    """What the layering is about: a package (fedlada.hosts), or a top-level module (fedlada.config)."""
    if module in PACKAGES:
        return module
    parent = module.rsplit(".", 1)[0]
    return parent if parent != "fedlada" else module


def _imported(module: str, path: Path) -> set[str]:
    """The fedlada modules `module` imports anywhere in its file (a late import inside a function counts:
    it only hides a cycle)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in MODULES and name != "fedlada":
                found.add(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on.discard(component[-1])
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_packages():
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        graph.setdefault(_unit(module), set()).update(
            _unit(m) for m in _imported(module, path) if _unit(m) != _unit(module))
    assert _cycles(graph) == []
    assert "fedlada.hosts" in graph["fedlada.methods"] and "fedlada.lada" in graph["fedlada.methods"]  # the walk sees imports


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_importing_the_config_imports_no_host():
    code = ("import sys, fedlada.config; loaded = [m for m in sys.modules if m.startswith(('fedlada.hosts', "
            "'fedlada.lada', 'fedlada.methods', 'fedlada.federation'))]; assert not loaded, loaded")
    result = _fresh(code)
    assert result.returncode == 0, result.stderr


def test_messages_and_handlers_are_registered_by_register_protocol_not_by_imports():
    code = """
import fedlada.methods as methods
from fedlada.federation.messages import REGISTRY
from fedlada.federation.participants import CLIENT_HANDLERS
from fedlada.hosts.fedmkt import Knowledge
from fedlada.lada.messages import Candidates, References
assert "Knowledge" not in REGISTRY and "Candidates" not in REGISTRY and not CLIENT_HANDLERS
methods.register_protocol("fedmkt+lada")
assert REGISTRY["Knowledge"] is Knowledge and REGISTRY["Candidates"] is Candidates
assert all(REGISTRY[cls.__name__] is cls for host in methods.METHODS.values() for cls in host.messages)
assert set(CLIENT_HANDLERS) == set(methods.METHODS["fedmkt+lada"].client_handlers) == {Knowledge, Candidates, References}
"""
    result = _fresh(code)
    assert result.returncode == 0, result.stderr


def test_the_training_loop_is_written_once():
    """backward / clip / step / zero-grad: only in models/training.py."""
    patterns = {"backward": r"\.backward\(", "clip": r"clip_grad_norm_\(", "step": r"\bopt\w*\.step\(",
                "zero-grad": r"\.zero_grad\("}
    for what, pattern in patterns.items():
        where = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") for _ in re.finditer(pattern, p.read_text())]
        assert where == ["models/training.py"], (what, where)


def test_the_code_cites_no_document_outside_the_repository():
    outside = re.compile(r"DESIGN(\.md| §)|FINDINGS|\.\./shared")
    assert [str(p) for p in SRC.rglob("*") if p.suffix in (".py", ".yaml", ".md") and outside.search(p.read_text())] == []
