"""Storage as a URI, as Ray Train takes it: a local or shared path (NFS), or an object store (``s3://``,
``gs://``) through pyarrow.fs, which Ray itself uses for ``storage_path``.

Everything of a job that outlives its trial goes through here: its checkpoints, its result folder and the
models that later evaluations, export and pick read. Workers train in a folder of their own node and
copy what must last to storage; readers copy it back into a local folder of theirs. So no process reads
a node-local path that another node wrote. Credentials and endpoint come from the variables pyarrow and
the cloud SDKs read (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``GOOGLE_APPLICATION_CREDENTIALS``, …).

A location is a string: a path (made absolute) or a URI. On an object store one upload is one PUT, so a
reader sees a file whole or not at all, as ``atomic_write`` gives on a disk.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from records.files import atomic_write


class StorageUnavailable(RuntimeError):
    """``--storage`` cannot hold a job's files; the message names the cause and the fix."""


def is_remote(location: str) -> bool:
    """True for an object-store URI (``s3://``, ``gs://``, …); False for a path or a ``file://`` URI."""
    scheme = urlparse(str(location)).scheme
    return len(scheme) > 1 and scheme != "file"


def resolve(location: str) -> str:
    """A path made absolute (trials run in other working directories); a URI without its trailing slash."""
    location = str(location)
    if is_remote(location):
        return location.rstrip("/")
    if location.startswith("file://"):
        location = urlparse(location).path
    return str(Path(location).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    if is_remote(location):
        return "/".join([str(location).rstrip("/"), *parts])
    return str(Path(location, *parts))


@functools.lru_cache(maxsize=None)
def _bucket_filesystem(root: str):
    from pyarrow import fs as pafs
    filesystem, _ = pafs.FileSystem.from_uri(root)
    return filesystem


def filesystem(location: str):
    """(pyarrow filesystem, path in it) for a location; one filesystem per bucket and process."""
    if not is_remote(location):
        from pyarrow import fs as pafs
        return pafs.LocalFileSystem(), resolve(location)
    parsed = urlparse(location)
    root = f"{parsed.scheme}://{parsed.netloc}"
    return _bucket_filesystem(root), f"{parsed.netloc}{parsed.path}".rstrip("/")


def exists(location: str) -> bool:
    if not is_remote(location):
        return Path(location).exists()
    from pyarrow import fs as pafs
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def upload(local_file: Path, location: str) -> None:
    """Copy ``local_file`` to ``location`` whole: an atomic rename on a disk, one PUT on an object store."""
    if not is_remote(location):
        if Path(local_file).resolve() != Path(location).resolve():
            atomic_write(Path(location), lambda tmp: shutil.copyfile(local_file, tmp))
        return
    fs, path = filesystem(location)
    with open(local_file, "rb") as source, fs.open_output_stream(path) as target:
        shutil.copyfileobj(source, target, length=16 << 20)


def download(location: str, local_file: Path) -> bool:
    """Copy ``location`` into ``local_file`` (atomically); False when there is nothing at ``location``."""
    from pyarrow import fs as pafs
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return False

    def fetch(tmp: Path) -> None:
        with fs.open_input_stream(path) as source, open(tmp, "wb") as target:
            shutil.copyfileobj(source, target, length=16 << 20)
    atomic_write(Path(local_file), fetch)
    return True


def write_text(location: str, text: str) -> None:
    if not is_remote(location):
        atomic_write(Path(location), lambda tmp: Path(tmp).write_text(text))
        return
    fs, path = filesystem(location)
    with fs.open_output_stream(path) as target:
        target.write(text.encode())


def delete(location: str) -> None:
    """Remove a file; nothing happens when it is not there."""
    if not is_remote(location):
        Path(location).unlink(missing_ok=True)
        return
    if exists(location):
        fs, path = filesystem(location)
        fs.delete_file(path)


def publish(local_dir: Path, location: str, names: list[str]) -> None:
    """Copy the files ``names`` of ``local_dir`` into the folder ``location``, in that order (put the file
    that marks the folder whole last); a no-op when ``location`` is ``local_dir`` itself."""
    for name in names:
        upload(Path(local_dir) / name, join(location, name))


@contextlib.contextmanager
def local_folder(location: str, names: list[str]) -> Iterator[Path | None]:
    """A local folder holding the files ``names`` of the folder ``location``, or None when the first of them
    is missing (the rest are optional). A path is its own local folder; an object-store folder is copied
    into a temporary folder, removed on exit."""
    if not is_remote(location):
        yield Path(location) if (Path(location) / names[0]).exists() else None
        return
    scratch = Path(tempfile.mkdtemp(prefix="resolab-storage-"))
    try:
        if not download(join(location, names[0]), scratch / names[0]):
            yield None
            return
        for name in names[1:]:
            download(join(location, name), scratch / name)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_storage(location: str) -> None:
    """Write and delete a probe file in ``location``: an unreachable endpoint, a missing bucket, refused
    credentials or a read-only folder fail here, in seconds and with one line, before anything runs."""
    probe = join(location, f".resolab-probe-{uuid.uuid4().hex[:12]}")
    endpoint = os.environ.get("AWS_ENDPOINT_URL") if urlparse(location).scheme == "s3" else None
    if endpoint:  # a down endpoint fails in a second here, not after pyarrow's retries
        parsed = urlparse(endpoint)
        try:
            socket.create_connection((parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)),
                                     timeout=3).close()
        except OSError as exc:
            raise StorageUnavailable(storage_problem(location, OSError(f"NETWORK_CONNECTION {exc}"))) from None
    try:
        write_text(probe, "resolab storage probe")
        delete(probe)
    except OSError as exc:
        raise StorageUnavailable(storage_problem(location, exc)) from None


def storage_problem(location: str, exc: OSError) -> str:
    """One line for an error of the object store (pyarrow reports the AWS error code in the text)."""
    text = " ".join(str(exc).split())
    if not is_remote(location):
        return f"--storage {location} is not writable here ({text}); pass a folder you can write to"
    bucket = urlparse(location).netloc
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    where = f"the endpoint {endpoint} (AWS_ENDPOINT_URL)" if endpoint else "the provider's default endpoint"
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return f"--storage {location}: bucket {bucket!r} does not exist at {where}; create it, or fix --storage"
    if "NETWORK_CONNECTION" in text or "Could not connect" in text or "resolve host" in text:
        return (f"--storage {location}: cannot reach {where}; check AWS_ENDPOINT_URL and that the object store "
                "is up")
    if any(code in text for code in ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                                      "credentials", "Forbidden", "403")):
        return (f"--storage {location}: {where} refused the credentials for bucket {bucket!r}; set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key that may write there")
    return f"--storage {location}: cannot write there ({text[:200]}); check the URI and the store's credentials"
