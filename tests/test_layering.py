"""src/billingdb is a core library with two shells: the core imports neither shell, nor typer,
starlette or pytest; the HTTP service does not import the CLI; test support is its own package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "billingdb"
SHELLS = ("billingdb.cli", "billingdb.service", "billingdb.testing")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else "core"


def test_the_core_imports_no_shell() -> None:
    # __main__ is the program's entry into the CLI, not part of the library.
    core = [p for p in PACKAGE.rglob("*.py") if _layer(p) == "core" and p.name != "__main__.py"]
    assert len(core) >= 10
    for path in core:
        leaks = {m for m in _imports(path)
                 if any(_in(m, shell) for shell in SHELLS) or m.split(".")[0] in {"typer", "starlette", "pytest"}}
        assert not leaks, f"{path.name} imports {sorted(leaks)}"


def test_the_service_does_not_import_the_cli() -> None:
    for path in (PACKAGE / "service").rglob("*.py"):
        assert not {m for m in _imports(path) if _in(m, "billingdb.cli")}, path.name


def test_importing_the_core_loads_no_shell_framework() -> None:
    modules = [f"billingdb.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem not in {"__init__", "__main__"}]
    code = (
        f"import sys, billingdb, {', '.join(modules)}, billingdb.testing.stripe\n"
        "print(sorted(m for m in ('typer', 'starlette', 'uvicorn', 'pytest') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
