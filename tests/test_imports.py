"""Module structure: loading a profile stays light (no torch), and the package has no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys

from fedvit_utils import paths

PACKAGE = paths.PROJECT_ROOT / "fedvit_utils"


def test_a_profile_loads_without_importing_torch():
    # The Flower launcher and the command line read profiles before they know whether they train; a fresh
    # interpreter, because this one has torch loaded already.
    code = ("import sys; from fedvit_utils.profiles import load_profile; load_profile('quick'); "
            "import fedvit_utils.keys, fedvit_utils.datasets; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                          cwd=paths.PROJECT_ROOT)
    assert done.stdout.strip() == "False"


def _imports(path) -> set[str]:
    """fedvit_utils modules `path` imports anywhere (functions included), except under `if TYPE_CHECKING:`."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            if target.startswith("fedvit_utils"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # `from . import paths`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_no_import_cycles():
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {m: {t for t in _imports(p) if t in modules and t != m} for m, p in modules.items()}
    state: dict[str, str] = {}

    def walk(m: str, trail: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph[m]):
            assert state.get(t) != "open", f"import cycle: {' -> '.join([*trail, m, t])}"
            if t not in state:
                walk(t, [*trail, m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            walk(m, [])
