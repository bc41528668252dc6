"""Storage as a URI: a folder or an object store (moto's S3 server), read and written whole, and the
one-line errors of a store that cannot hold a job's files."""
from __future__ import annotations

import time
from pathlib import Path

import boto3
import pytest

from orchestrator.cli.main import main
from orchestrator.engine import checkpoint as ckpt
from orchestrator.engine.results import fetched_result, publish_result, write_result
from records import storage
from records.layout import job_dir
from records.storage import StorageUnavailable, check_storage


def keys(bucket_uri: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket_uri.removeprefix("s3://"))
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_a_job_folder_on_s3_is_a_uri_and_files_travel_whole(s3_bucket, tmp_path):
    folder = job_dir(s3_bucket + "/runs/", "suite", "job", "abc123")
    assert folder == f"{s3_bucket}/runs/suite/jobs/job-abc123"  # not a local folder named "s3:"
    source = tmp_path / "checkpoint.pt"
    ckpt.save(tmp_path, {"epoch": 1, "config": {"train": {"epochs": 2}}, "config_hash": "abc123", "method": "rsnet"})
    storage.upload(source, storage.join(folder, ckpt.CHECKPOINT_FILE))
    assert keys(s3_bucket) == ["runs/suite/jobs/job-abc123/checkpoint.pt"]
    assert storage.exists(storage.join(folder, ckpt.CHECKPOINT_FILE))
    assert not storage.exists(storage.join(folder, "other"))
    # The final-checkpoint check reads it back from the bucket (epoch 1 of 2: the last one).
    assert ckpt.final_checkpoint(folder)["config_hash"] == "abc123"
    with storage.local_folder(folder, [ckpt.CHECKPOINT_FILE]) as local:
        assert (local / ckpt.CHECKPOINT_FILE).read_bytes() == source.read_bytes()
        copied = local
    assert not copied.exists()  # the local copy goes with the block
    with storage.local_folder(storage.join(s3_bucket, "nothing"), [ckpt.CHECKPOINT_FILE]) as local:
        assert local is None
    assert ckpt.final_checkpoint(storage.join(s3_bucket, "nothing")) is None


def test_a_result_published_to_s3_reads_back_the_same(s3_bucket, tmp_path):
    import pandas as pd

    from analysis.matrix import Matrix

    frame = pd.DataFrame({"mode": ["fixed", "fixed"], "row": [32, 32], "test_res": [32, 24],
                          "top1": [50.0, 25.0], "top5": [90.0, 80.0]})
    local = write_result(tmp_path / "result", Matrix(frame), {32: 1000, 24: 560}, 10, 0, 1.5)
    location = storage.join(s3_bucket, "suite", "jobs", "j-1")
    storage.write_text(storage.join(location, "result.json"), "stale")  # an earlier, replaced result
    assert publish_result(local, location) == location
    assert keys(s3_bucket)[-1].endswith("result.json")
    with fetched_result(location) as outcome:
        pd.testing.assert_frame_equal(outcome.matrix.frame, frame)
        assert (outcome.madds, outcome.num_classes, outcome.eval_time_s) == ({32: 1000, 24: 560}, 10, 1.5)
        assert [p.read_bytes() for p in outcome.figures] == [(local / p.name).read_bytes() for p in outcome.figures]
        assert len(outcome.figures) == 3  # heatmap, accuracy vs test resolution, vs MAdds
    with pytest.raises(FileNotFoundError, match="result.json"):
        with fetched_result(storage.join(s3_bucket, "suite", "jobs", "none")):
            pass


def test_a_local_folder_is_its_own_copy(tmp_path):
    folder = job_dir(str(tmp_path / "store"), "s", "j", "h")
    assert Path(folder).is_absolute()
    ckpt.save(Path(folder), {"epoch": 0})
    with storage.local_folder(folder, [ckpt.CHECKPOINT_FILE]) as local:
        assert local == Path(folder)
    assert (Path(folder) / ckpt.CHECKPOINT_FILE).exists()  # nothing removed


def test_a_missing_bucket_is_one_line_naming_it(s3_bucket):
    with pytest.raises(StorageUnavailable, match=r"bucket 'no-such-bucket' does not exist at the endpoint http://127"):
        check_storage("s3://no-such-bucket/runs")
    check_storage(s3_bucket + "/runs")  # the probe file is written and removed
    assert keys(s3_bucket) == [] or all(not k.split("/")[-1].startswith(".resolab-probe") for k in keys(s3_bucket))


def test_an_unreachable_endpoint_fails_in_seconds_through_the_cli(s3_bucket, monkeypatch, capsys, tmp_path):
    from tests.conftest import free_port
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    code = main(["run", "experiments/quickstart.yaml", "--smoke", "--storage", s3_bucket + "/runs",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and time.monotonic() - started < 10
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "cannot reach the endpoint http://127.0.0.1:" in err and "AWS_ENDPOINT_URL" in err


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(StorageUnavailable, match=r"is not writable here .*pass a folder you can write to"):
        check_storage(str(blocked / "runs"))
