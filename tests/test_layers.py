"""The house's floors (DESIGN.md "Layout", pyproject.toml [tool.importlinter]): every floor imports
only the floors below it, no two modules import each other in a cycle, and an import inside a
function says why it is there (an optional vendor package, or a slow import kept off a fast path)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "ppharness"
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the project's contracts over the package under `root`."""
    if not LINT.exists():
        pytest.skip(f"import-linter is not installed beside {sys.executable} (the dev extra installs it)")
    env = {"PATH": str(LINT.parent), "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


def test_the_floors_and_no_cycles():
    res = lint(REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "3 kept, 0 broken" in res.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # an upward import: the measurement core reaching for the CLI
        ("core/stats.py", "from ppharness import cli  # noqa: F401", "Floors"),
        # a cycle inside one floor: compare <- claims already; compare -> claims closes it
        ("judge/compare.py", "from ppharness.judge import claims  # noqa: F401", "No import cycles"),
    ],
)
def test_the_contracts_can_fail(tmp_path, module, line, broken):
    """The same contracts over a copy of the package with one bad import added: lint-imports fails
    and names the contract, so the check above is not one that always passes."""
    shutil.copytree(PACKAGE, tmp_path / "ppharness", ignore=shutil.ignore_patterns("__pycache__", "_data"))
    target = tmp_path / "ppharness" / module
    target.write_text(target.read_text() + "\n" + line + "\n")
    res = lint(tmp_path)
    assert res.returncode != 0
    assert f"{broken}" in res.stdout and "BROKEN" in res.stdout, res.stdout[-3000:]


def _function_imports(path: Path):
    """(line number, first line of its group, text of the line above) of every import inside a
    function; consecutive imports form one group, which one comment may explain."""
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                first = node.lineno  # walk up through the group: imports, and blank lines between them
                while first > 2 and (
                    lines[first - 2].strip().startswith(("import ", "from "))
                    or (not lines[first - 2].strip() and lines[first - 3].strip().startswith(("import ", "from ")))
                ):
                    first -= 1
                yield node.lineno, lines[first - 1], lines[first - 2] if first > 1 else ""


def test_an_import_inside_a_function_says_why():
    """Imports inside functions only for optional vendor packages or slow imports, each with a
    one-line why: a comment on the group's first line or the line above it."""
    silent = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for lineno, first, above in _function_imports(path):
            if "#" not in first and "#" not in above:
                silent.append(f"{path.relative_to(REPO)}:{lineno}: {first.strip()}")
    assert not silent, "imports inside functions without a why:\n" + "\n".join(silent)


def test_one_import_package_of_our_own():
    """Nothing installs a generic top-level name (`bench`, `kernels`) that other projects own."""
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages == {"ppharness"}, packages
    text = (REPO / "pyproject.toml").read_text()
    assert 'name = "ppharness"' in text and 'ppbench = "ppharness.cli:main"' in text
