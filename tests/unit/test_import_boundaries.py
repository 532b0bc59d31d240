"""No module in libs/ or services/ imports another package's private module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module at ``path`` below the import root ``root``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_roots(repo: Path) -> list[Path]:
    """Where the product's packages are imported from: libs/ and each service's folder."""
    return [repo / "libs", *sorted(p for p in (repo / "services").iterdir() if p.is_dir())]


def imported_names(tree: ast.AST) -> list[str]:
    """Every dotted name a module imports, ``from a.b import c`` giving ``a.b.c``."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def private_owner(name: str) -> str | None:
    """The package that owns the first private part of ``name``, if it has one."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__") and i > 0:
            return ".".join(parts[:i])
    return None


def violations(repo: Path) -> list[str]:
    """``module: imported name`` for each import of a private module from outside its package."""
    found: list[str] = []
    first_party = {p.name for root in import_roots(repo) for p in root.iterdir() if p.is_dir()}
    for root in import_roots(repo):
        for path in sorted(root.rglob("*.py")):
            importer = module_name(path, root)
            package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
            for name in imported_names(ast.parse(path.read_text(), str(path))):
                owner = private_owner(name)
                inside = owner is not None and (package == owner or package.startswith(owner + "."))
                if owner is not None and owner.split(".")[0] in first_party and not inside:
                    found.append(f"{importer}: {name}")
    return found


def test_no_module_imports_another_packages_private_module() -> None:
    assert violations(REPO) == []


def test_the_walk_sees_a_private_import_from_outside_and_allows_one_from_inside(
    tmp_path: Path,
) -> None:
    ctl = tmp_path / "libs" / "meshmind" / "ctl"
    lab = tmp_path / "libs" / "meshmind" / "lab"
    for package in (ctl, lab, tmp_path / "services" / "svc" / "meshmind_svc"):
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
    (lab / "_state.py").write_text("")
    (lab / "_daemon.py").write_text("from meshmind.lab._state import x\n")
    (ctl / "_lab.py").write_text("def f():\n    from meshmind.lab._state import pid_alive\n")
    (ctl / "_ok.py").write_text(
        "from meshmind.lab import pid_alive\nfrom meshmind.ctl._lab import f\n"
    )
    assert violations(tmp_path) == ["meshmind.ctl._lab: meshmind.lab._state.pid_alive"]


def test_the_bus_loads_nothing_above_it() -> None:
    probe = (
        "import sys, meshmind.bus, meshmind.bus.protocol\n"
        "print(sorted({m.split('.')[0] if not m.startswith('meshmind.') else m.split('.')[1]"
        " for m in sys.modules if m.startswith(('meshmind.', 'nkeys', 'cryptography'))}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    assert loaded.strip() == "['bus']"
