"""Writing files so that an interrupted write never leaves a half-written file or loses the previous one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the result over ``path`` (atomic on one filesystem).

    If ``write`` fails or is interrupted, ``path`` keeps its previous content and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)  # mkstemp makes files private; these are ordinary, shareable files
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_json_atomic(path: str | os.PathLike, data: dict) -> Path:
    return write_atomic(path, lambda temporary: Path(temporary).write_text(json.dumps(data, indent=2)))
