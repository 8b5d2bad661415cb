"""The reconciler decides from envelopes and canonical records only: what a side can or
cannot store lives in services/core (records), never in a connector (issue 12, item 3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECONCILER = ROOT / "services" / "reconciler"
FORBIDDEN = "services.connectors"


def imported_modules(source: str, package: str) -> list[str]:
    """Every module an `import` or `from ... import` anywhere in `source` names, with
    relative imports resolved against `package` and `from pkg import x` also as `pkg.x`
    (x may be a module)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names += [base, *(f"{base}.{a.name}" for a in node.names)]
    return names


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def is_forbidden(module: str) -> bool:
    return module == FORBIDDEN or module.startswith(FORBIDDEN + ".")


def test_no_reconciler_module_imports_a_connector() -> None:
    files = sorted(RECONCILER.rglob("*.py"))
    assert RECONCILER / "handler.py" in files and RECONCILER / "core" / "events.py" in files
    offenders = {
        str(f.relative_to(ROOT)): bad
        for f in files
        if (bad := [m for m in imported_modules(f.read_text(), package_of(f)) if is_forbidden(m)])
    }
    assert offenders == {}


@pytest.mark.parametrize(
    "source",
    [
        "import services.connectors.salesforce.mapping",
        "from services.connectors.salesforce import mapping as sf_mapping",
        "from services import connectors",
        "from ...connectors.exchange import models",
        "def f() -> None:\n    from services.connectors.exchange import models\n",
    ],
)
def test_the_walk_sees_every_spelling_of_a_connector_import(source: str) -> None:
    # As if written in services/reconciler/core/x.py: the check above must be able to fail.
    assert any(is_forbidden(m) for m in imported_modules(source, "services.reconciler.core"))


def test_core_imports_are_not_mistaken_for_connectors() -> None:
    source = "from services.core.records import FIELDS\nfrom . import merge\nfrom ..connectors import x"
    names = imported_modules(source, "services.reconciler.core")
    assert "services.reconciler.core.merge" in names and "services.reconciler.connectors.x" in names
    assert not any(is_forbidden(m) for m in names)
