"""Files that appear whole or not at all: checkpoints, model files, predictions, exports."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: Path, write: Callable[[Path], object], directory: bool = False) -> Path:
    """``write(tmp)`` into a temporary file (or, with ``directory``, a temporary folder) beside ``path``,
    then rename it to ``path``. A reader never sees a half-written ``path``; on any error, Ctrl-C
    included, the temporary is removed and an existing ``path`` is left as it was. A folder replaces
    only an empty folder (``os.replace`` cannot replace a full one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        write(tmp)
        # mkstemp makes 0600 and mkdtemp 0700; what is written is an ordinary file or folder.
        os.chmod(tmp, (0o777 if directory else 0o666) & ~current_umask())
        if directory:
            if path.exists():
                path.rmdir()
        else:
            with open(tmp, "rb+") as written:  # on disk before the rename: a crash then leaves the old or the new file
                os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
