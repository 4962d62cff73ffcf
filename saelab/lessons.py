"""The course's notebooks, copied out of the installed package: ``python -m saelab.lessons DIR``.

A classroom installs the library with pip, not a git checkout, so the notebooks ship inside the wheel (as
``saelab/course/``, built from the repository's ``lessons/``). This copies the learner notebooks and their
worked solutions into a folder of the learner's own, where they can be edited and run:

    python -m saelab.lessons my-course && jupyter lab my-course

Existing notebooks are never overwritten unless asked (``--force``), and each file is written to a temporary
name and renamed into place, so an interrupted copy leaves no half-written notebook.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from saelab.files import write_atomic

_LESSON = re.compile(r"^\d\d_.+\.ipynb$")


def source_dir() -> Path:
    """Where the notebooks are: ``saelab/course/`` in an installed wheel, ``lessons/`` in a checkout."""
    package = Path(__file__).parent
    for folder in (package / "course", package.parent / "lessons"):
        if folder.is_dir() and any(_LESSON.match(p.name) for p in folder.iterdir()):
            return folder
    raise FileNotFoundError(f"the course notebooks are not installed next to {package}; reinstall saelab")


def lesson_files() -> list[tuple[Path, Path]]:
    """``(source, relative destination)`` for every learner notebook and every solution, in lesson order."""
    source = source_dir()
    pairs = []
    for folder, relative in ((source, Path()), (source / "solutions", Path("solutions"))):
        pairs += [(p, relative / p.name) for p in sorted(folder.iterdir()) if _LESSON.match(p.name)]
    return pairs


def copy_lessons(dest: str | os.PathLike, force: bool = False) -> list[Path]:
    """Copy the learner notebooks into ``dest`` and the solutions into ``dest/solutions``; return the new paths.

    Refuses (before writing anything) when ``dest`` is a file, or when a notebook of the same name is already
    there and ``force`` is False: a learner's edited notebook is never replaced by accident.
    """
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"dest={str(dest)!r} is a file; give a folder (new or existing) for the notebooks")
    files = lesson_files()
    existing = [dest / relative for _, relative in files if (dest / relative).exists()]
    if existing and not force:
        raise FileExistsError(f"dest={str(dest)!r} already holds {len(existing)} of the notebooks (e.g. "
                              f"{existing[0].name}); pass force=True (--force) to overwrite them, or another folder")
    written = []
    for source, relative in files:
        written.append(write_atomic(dest / relative, lambda temporary, source=source: shutil.copyfile(source,
                                                                                                       temporary)))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saelab.lessons", description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", help="folder to copy the notebooks into (created if missing)")
    parser.add_argument("--force", action="store_true", help="overwrite notebooks already in DEST")
    args = parser.parse_args(argv)
    try:
        written = copy_lessons(args.dest, force=args.force)
    except (FileExistsError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    learner = [p for p in written if p.parent.name != "solutions"]
    print(f"copied {len(learner)} lessons and {len(written) - len(learner)} solutions into {Path(args.dest)}:")
    for path in learner:
        print(f"  {path.name}")
    print(f"next: jupyter lab {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
