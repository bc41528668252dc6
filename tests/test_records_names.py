"""Every MLflow tag name resolab writes is spelled in one file, records/names.py; old stores stay readable."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from records import names

REPO = Path(__file__).resolve().parent.parent
TAG = re.compile(r"resolab\.[a-z_]+")
HOME = REPO / "records" / "names.py"


def source_files():
    for path in sorted(REPO.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if parts[0] in ("tests", ".venv", "build") or any(p.startswith(".") for p in parts):
            continue
        yield path


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings: prose about the tags, not the tags themselves."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def tag_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    skip = docstrings(tree)
    return [(node.lineno, tag) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
            for tag in TAG.findall(node.value)]


def test_tag_names_are_written_only_in_records_names():
    elsewhere = [f"{path.relative_to(REPO)}:{line}: {tag}" for path in source_files() if path != HOME
                 for line, tag in tag_literals(path)]
    assert not elsewhere, "tag names outside records/names.py:\n" + "\n".join(elsewhere)


def test_the_scan_sees_tags_in_code_and_f_strings_but_not_in_docstrings(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Tagged ``resolab.kind``."""\n'
                      'def f(tags):\n'
                      '    """Reads resolab.suite."""\n'
                      '    return f"job {tags.get(\'resolab.job\')}", {"resolab.error": 1}\n')
    assert sorted(tag_literals(module)) == [(4, "resolab.error"), (4, "resolab.job")]
    assert tag_literals(HOME), "records/names.py defines the tags"


def test_tag_values_of_existing_stores_are_kept():
    """The strings already in users' tracking stores: a changed value would hide every run recorded."""
    assert {name: getattr(names, name) for name in (
        "KIND", "SUITE", "JOB", "GROUP", "METHOD", "BACKBONE", "CONFIG_HASH", "TRAINING_HASH", "CODE_VERSION",
        "TRAIN_RESOLUTIONS", "SEED", "USER_TAG", "CHECKPOINT_DIR", "ERROR", "REUSED_FROM", "EVALUATED_FROM",
        "SOURCE_CODE_VERSION", "SOURCE_CHECKPOINT", "MODEL_FILE", "COMMAND", "DRIVER", "DRIVER_HEARTBEAT")} == {
        "KIND": "resolab.kind", "SUITE": "resolab.suite", "JOB": "resolab.job", "GROUP": "resolab.group",
        "METHOD": "resolab.method", "BACKBONE": "resolab.backbone", "CONFIG_HASH": "resolab.config_hash",
        "TRAINING_HASH": "resolab.training_hash", "CODE_VERSION": "resolab.code_version",
        "TRAIN_RESOLUTIONS": "resolab.train_resolutions", "SEED": "resolab.seed", "USER_TAG": "resolab.tag",
        "CHECKPOINT_DIR": "resolab.checkpoint_dir", "ERROR": "resolab.error", "REUSED_FROM": "resolab.reused_from",
        "EVALUATED_FROM": "resolab.evaluated_from", "SOURCE_CODE_VERSION": "resolab.source_code_version",
        "SOURCE_CHECKPOINT": "resolab.source_checkpoint", "MODEL_FILE": "resolab.model_file",
        "COMMAND": "resolab.command", "DRIVER": "resolab.driver", "DRIVER_HEARTBEAT": "resolab.driver_heartbeat"}
    assert (names.SUITE_RUN, names.JOB_RUN, names.TABLES_RUN) == ("suite", "job", "tables")
    assert names.FINISHED_JOB_FILTER == "tags.`resolab.kind` = 'job' and attributes.status = 'FINISHED'"
    assert names.tag_column(names.CONFIG_HASH) == "tags.resolab.config_hash"
    assert (names.MATRIX_DIR, names.MATRIX_PARQUET, names.MATRIX_CSV, names.PREDICTIONS_PARQUET,
            names.GAP_CDF_PARQUET) == ("matrix", "matrix.parquet", "matrix.csv", "predictions.parquet",
                                       "gap_cdf.parquet")
