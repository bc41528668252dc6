"""Imports run one way between the project's packages and rooms, with no cycles.

    backbones <- methods <- jobspec <- records <- analysis <- orchestrator
    orchestrator: data <- engine <- cluster <- deploy <- cli

A package imports only the packages to its left (bench/ and tests/ may import anything), so the lower
layers can be read, tested and reused without the ones above. The rules are import-linter contracts in
pyproject.toml's [tool.importlinter]; import-linter counts every import, module level or inside a
function. The one kind it cannot see, ``importlib.import_module("x")`` with a literal name, is refused
here so that every import stays visible to it.
"""
from __future__ import annotations

import ast
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("backbones", "methods", "jobspec", "records", "analysis", "orchestrator")
ROOMS = ("data", "engine", "cluster", "deploy", "cli")


def test_the_project_keeps_its_import_contracts(monkeypatch, capsys):
    from importlinter.cli import lint_imports

    monkeypatch.setattr(sys, "path", list(sys.path))  # lint_imports puts the working directory first
    monkeypatch.chdir(REPO)
    # import-linter configures logging with disable_existing_loggers: put every logger back afterwards,
    # so that tests running later in this session still see the project's log lines.
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)] + [logging.root]
    disabled = [logger.disabled for logger in loggers]
    try:
        code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    finally:
        for logger, was in zip(loggers, disabled):
            logger.disabled = was
    report = capsys.readouterr().out
    assert code == 0, report
    assert "3 kept, 0 broken" in report, report  # every contract was read and checked


# ---------------------------------------------------------------- the contracts catch what they are for


def write_tree(root: Path, files: dict[str, str]) -> None:
    """The project's packages and rooms as empty modules, then ``files`` (path: source) on top."""
    for package in LAYERS:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    for room in ROOMS:
        (root / "orchestrator" / room).mkdir()
        (root / "orchestrator" / room / "__init__.py").write_text("")
    for path, source in files.items():
        (root / path).write_text(textwrap.dedent(source))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")


def lint_tree(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` in ``root``, where the tree's packages shadow the installed project's."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
                           "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_contracts_catch_upward_imports_and_cycles_inside_functions(tmp_path):
    clean = tmp_path / "clean"
    write_tree(clean, {"methods/rsnet.py": "from backbones import resnet\n",
                       "orchestrator/cli/main.py": "def run():\n    from orchestrator.cluster import suite\n"})
    result = lint_tree(clean)
    assert result.returncode == 0 and "3 kept, 0 broken" in result.stdout, result.stdout + result.stderr

    broken = tmp_path / "broken"
    write_tree(broken, {
        "backbones/resnet.py": "def build():\n    from jobspec import config\n",
        "jobspec/config.py": "",
        "orchestrator/engine/loop.py": "def fit():\n    import orchestrator.cli.main\n",
        "orchestrator/cli/main.py": "",
        "orchestrator/cluster/suite.py": "from orchestrator.cluster import evaluate_only\n",
        "orchestrator/cluster/evaluate_only.py": "def evaluate():\n    from orchestrator.cluster import suite\n",
    })
    result = lint_tree(broken)
    out = result.stdout
    assert result.returncode == 1 and "0 kept, 3 broken" in out, out + result.stderr
    assert "backbones.resnet -> jobspec.config" in out
    assert "orchestrator.engine.loop -> orchestrator.cli.main" in out
    assert "No cycles are allowed in orchestrator.cluster" in out


# ---------------------------------------------------------------- what import-linter cannot see


def literal_dynamic_imports(source: str) -> list[str]:
    """``importlib.import_module("x")`` and ``__import__("x")`` calls whose module name is a literal."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return [f"{line}: {name}" for line, name in sorted(found)]


def test_literal_dynamic_imports_are_found():
    source = "import importlib\ndef f():\n    return importlib.import_module('orchestrator.cli')\n" \
             "x = __import__('json')\ny = importlib.import_module(f'methods.{x}')\n"
    assert literal_dynamic_imports(source) == ["3: orchestrator.cli", "4: json"]


@pytest.mark.parametrize("package", LAYERS)
def test_no_literal_dynamic_import_hides_from_the_contracts(package):
    found = [f"{path.relative_to(REPO)}:{hit}" for path in sorted((REPO / package).rglob("*.py"))
             for hit in literal_dynamic_imports(path.read_text())]
    assert not found, "write these as plain imports, which the import contracts check:\n" + "\n".join(found)
