"""records.store: the tracking URI resolved once, and the SQLite store's file and artifacts found from it."""
from __future__ import annotations

from pathlib import Path

from records.store import artifact_location, resolve_tracking_uri, sqlite_file, store_is_empty


def test_uris_resolve_to_absolute_sqlite_files_or_stay_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RESOLAB_HOME", str(tmp_path / "home"))
    assert resolve_tracking_uri("sqlite:///rel/m.db") == f"sqlite:///{tmp_path / 'rel' / 'm.db'}"
    assert resolve_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert resolve_tracking_uri("bare.db") == f"sqlite:///{tmp_path / 'bare.db'}"
    assert resolve_tracking_uri("http://host:5000") == "http://host:5000"
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri() == "http://env:5000"


def test_a_sqlite_store_keeps_its_artifacts_beside_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sqlite_file(uri) == tmp_path / "mlflow.db"
    assert artifact_location(uri) == (tmp_path / "artifacts").as_uri()
    assert sqlite_file("http://host:5000") is None and artifact_location("http://host:5000") is None
    assert store_is_empty(uri)
    Path(tmp_path / "mlflow.db").touch()
    assert not store_is_empty(uri) and not store_is_empty("http://host:5000")
