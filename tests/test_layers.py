"""Imports run one way between the project's packages.

    backbones <- methods <- jobspec <- records <- analysis <- orchestrator

A package may import only the packages to its left (bench/ and tests/ may import anything), so the
lower layers can be read, tested and reused without the ones above, and no two packages import each
other. Every import counts: module-level or inside a function, ``import x`` or ``from x import y``,
relative imports resolved to their package, and ``importlib.import_module("x")`` with a literal name.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

LAYERS = ("backbones", "methods", "jobspec", "records", "analysis", "orchestrator")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Import:
    path: str
    line: int
    module: str  # absolute dotted name of what is imported
    statement: str  # the source text of the import

    @property
    def package(self) -> str:
        return self.module.split(".")[0]


def module_name(path: Path, root: Path = REPO) -> tuple[str, bool]:
    """Dotted module name of a file under ``root``, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _dynamic_import(node: ast.Call) -> str | None:
    """The literal module name of ``importlib.import_module("x")`` or ``__import__("x")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports_of(source: str, path: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import anywhere in ``source`` (module level, functions, classes, conditional blocks)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [_absolute(node, module, is_package)]
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            names = [_dynamic_import(node)]
        else:
            continue
        text = ast.get_source_segment(source, node) or ast.unparse(node)
        found += [Import(path, node.lineno, name, " ".join(text.split())) for name in names]
    return found


def layer_violations(source: str, path: str, module: str, is_package: bool = False) -> list[str]:
    """'path:line: <package> imports <module> (<statement>)' for each import of a package that is
    not strictly below the importing one."""
    importer = module.split(".")[0]
    allowed = set(LAYERS[:LAYERS.index(importer)])
    return [f"{imp.path}:{imp.line}: {importer} imports {imp.module} ({imp.statement})"
            for imp in imports_of(source, path, module, is_package)
            if imp.package in LAYERS and imp.package != importer and imp.package not in allowed]


def package_files(package: str) -> list[Path]:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    return files


def project_imports() -> list[tuple[str, Import]]:
    """(importing package, import) for every import in every file of the layered packages."""
    found = []
    for package in LAYERS:
        for path in package_files(package):
            module, is_package = module_name(path)
            rel = str(path.relative_to(REPO))
            found += [(package, imp) for imp in imports_of(path.read_text(), rel, module, is_package)]
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {p: set() for p in LAYERS}
    for importer, imp in project_imports():
        if imp.package in LAYERS and imp.package != importer:
            graph[importer].add(imp.package)
    return graph


# --------------------------------------------------------------------------------------------
# The checker itself


def test_checker_reports_imports_of_a_higher_layer():
    source = ("import os\n"
              "from jobspec import JobConfig\n"
              "from . import plots\n"
              "from .report import log_matrix\n"
              "def build():\n"
              "    from orchestrator.deploy.model_file import load_model\n"
              "    import orchestrator.cli.main as cli, json\n"
              "    return importlib.import_module('orchestrator.cluster.suite')\n")
    assert layer_violations(source, "analysis/fake.py", "analysis.fake") == [
        "analysis/fake.py:6: analysis imports orchestrator.deploy.model_file (from orchestrator.deploy.model_file import load_model)",
        "analysis/fake.py:7: analysis imports orchestrator.cli.main (import orchestrator.cli.main as cli, json)",
        "analysis/fake.py:8: analysis imports orchestrator.cluster.suite (importlib.import_module('orchestrator.cluster.suite'))",
    ]


def test_checker_reports_a_bottom_layer_importing_upwards():
    assert layer_violations("if True:\n    import jobspec.tree as tree\n", "methods/fake.py", "methods.fake") \
        == ["methods/fake.py:2: methods imports jobspec.tree (import jobspec.tree as tree)"]
    assert layer_violations("import backbones\nimport methods.catalog\n", "jobspec/fake.py", "jobspec.fake") == []


def test_relative_imports_resolve_to_their_package():
    def names(source, module, is_package=False):
        return [imp.module for imp in imports_of(source, "x.py", module, is_package)]

    assert names("from .catalog import BACKBONES", "backbones.net") == ["backbones.catalog"]
    assert names("from . import net", "backbones.net") == ["backbones"]
    assert names("from .base import Method", "methods", is_package=True) == ["methods.base"]
    assert names("from ..catalog import X", "methods.sub.mod") == ["methods.catalog"]


def test_module_names_of_files():
    assert module_name(REPO / "analysis" / "report.py") == ("analysis.report", False)
    assert module_name(REPO / "jobspec" / "__init__.py") == ("jobspec", True)


# --------------------------------------------------------------------------------------------
# The project


@pytest.mark.parametrize("package", LAYERS)
def test_package_imports_only_lower_layers(package):
    violations = []
    for path in package_files(package):
        module, is_package = module_name(path)
        violations += layer_violations(path.read_text(), str(path.relative_to(REPO)), module, is_package)
    assert not violations, "imports against the layer order " + " <- ".join(LAYERS) + ":\n" + "\n".join(violations)


def test_no_two_packages_import_each_other():
    graph = package_graph()
    mutual = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if a < b and a in graph[b])
    assert not mutual, mutual


def test_model_layers_import_no_config_analysis_or_orchestration():
    graph = package_graph()
    for package in ("backbones", "methods"):
        upward = graph[package] & {"jobspec", "analysis", "orchestrator"}
        assert not upward, f"{package} imports {sorted(upward)}"
