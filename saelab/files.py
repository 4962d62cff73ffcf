"""Writing files so that an interrupted write never leaves a half-written file or loses the previous one.

Every file saelab writes goes through this module: a single file (``write_atomic``, ``write_text_atomic``,
``write_json_atomic``), several files of one folder together (``write_files_atomic``, e.g. an SAE's weights and
its config), or a whole folder (``write_dir_atomic``, e.g. the converted model cache). Each is written in full
under a temporary name beside its target, then renamed over it (``os.replace`` is atomic on one file system).
The results get the permissions any new file gets (``0o666`` / ``0o777`` less the umask), not the private
``0o600`` / ``0o700`` that ``tempfile`` gives its temporaries.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

Writer = Callable[[str], None]
"""Writes a file (or fills a folder) at the temporary path it is given."""


def _umask() -> int:
    # The only portable way to read the umask is to set it and put it back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary_file(folder: Path, name: str) -> str:
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(handle)
    return temporary


def write_files_atomic(folder: str | os.PathLike, writers: Mapping[str, Writer]) -> Path:
    """Write several files of ``folder`` together: ``writers`` maps a file name to ``write(temporary_path)``.

    Every file is written in full under a temporary name first, and only then are they renamed into place one
    after another. So a failure while writing (an exception, a full disk) leaves every previous file as it was
    and no temporary file behind; only a crash between the back-to-back renames could mix old and new files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mode = 0o666 & ~_umask()
    temporaries: dict[str, str] = {}
    try:
        for name, write in writers.items():
            temporaries[name] = _temporary_file(folder, name)
            write(temporaries[name])
            os.chmod(temporaries[name], mode)
        for name, temporary in temporaries.items():
            os.replace(temporary, folder / name)
    finally:
        for temporary in temporaries.values():
            if os.path.exists(temporary):
                os.remove(temporary)
    return folder


def write_atomic(path: str | os.PathLike, write: Writer) -> Path:
    """Call ``write(temporary_path)``, then rename the result over ``path`` (atomic on one filesystem).

    If ``write`` fails or is interrupted, ``path`` keeps its previous content and the temporary file is removed.
    """
    path = Path(path)
    write_files_atomic(path.parent, {path.name: write})
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2))


def write_dir_atomic(folder: str | os.PathLike, write: Writer) -> Path:
    """Call ``write(temporary_folder)`` on a new empty folder beside ``folder``, then swap it in for ``folder``.

    If ``write`` fails, ``folder`` is left as it was and the temporary folder is removed. An existing ``folder``
    is first renamed aside and deleted once the new one is in place, so a reader never sees a mix of the two
    (for that instant ``folder`` is missing). If another process put a folder there in between, the rename
    raises ``OSError`` and that folder is kept.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    aside: Path | None = None
    try:
        write(str(temporary))
        os.chmod(temporary, 0o777 & ~_umask())
        if folder.exists():
            aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".old"))
            os.replace(folder, aside)  # a folder may be renamed onto an empty folder
        try:
            os.replace(temporary, folder)
        except OSError:
            if aside is not None and not folder.exists():
                os.replace(aside, folder)  # put the previous folder back
                aside = None
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return folder
