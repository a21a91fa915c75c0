"""Result files written atomically: a reader (or a run killed mid-write) sees the old file or the new one,
never half of one. Each write goes to a temporary file in the same folder, is fsync'd, then os.replace'd
over the target (atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

PathLike = Union[str, os.PathLike]


def write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_json(path: PathLike, obj: Any, **dump_options) -> Path:
    """JSON (UTF-8, not ASCII-escaped, indented by 2 unless told otherwise), newline-terminated."""
    dump_options = {"indent": 2, "ensure_ascii": False, **dump_options}
    return write_text(path, json.dumps(obj, **dump_options) + "\n")


def write_csv(path: PathLike, fieldnames: Sequence[str], rows: Iterable[dict]) -> Path:
    """A CSV with a header; keys of a row beyond `fieldnames` are left out."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())
