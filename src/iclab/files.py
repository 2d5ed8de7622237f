"""Atomic file writes: readers (and a crash) see the old file or the new one, whole, never half of one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import UserError


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run folder's files are as readable as any other
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full_error(path.parent, len(text.encode())) from None
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_disk_full(error: BaseException) -> bool:
    """Whether a write failed for want of space: an OSError, or safetensors' error, which only quotes the OS error."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(error) or "StorageFull" in str(error)


def disk_full_error(folder: Path, needed: int) -> UserError:
    free = shutil.disk_usage(folder).free if Path(folder).exists() else 0
    return UserError(
        f"no space left to write in {folder}: needs about {_size(needed)}, {_size(free)} free; free some space "
        "and run the command again (nothing already written was changed)"
    )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
