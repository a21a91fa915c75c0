#!/usr/bin/env python3
"""Batch OCR of whole collections with the MLX TrOCR model: resumable, crash-safe, shardable.

    python scripts/mlx_batch_processor.py --directory scans --recursive --output-csv out.csv
    python scripts/mlx_batch_processor.py --directory scans --pattern "*.{jpg,png}" --output-csv out.csv --resume
    python scripts/mlx_batch_processor.py --manifest lines.txt --shard 2/3 --output-csv part2.csv
    python scripts/mlx_batch_processor.py --images a.png b.tif --text-files
    python scripts/mlx_batch_processor.py --directory scans -r --output-csv out.csv --workers 2
    python scripts/mlx_batch_processor.py --manifest lines.txt --ray-address HEAD:6379 --output-csv out.csv

Every input becomes rows of the CSV `image_name,image_path,text,success,processing_time,error,timestamp`:
one row per image, one per page of a multi-page TIFF or a PDF (image_name `scan.pdf[page 2]`, image_path
the file; PDF pages rendered at --pdf-dpi), and one failed row (with the reason in `error`) for a file
that cannot be read. Rows are appended, flushed and fsync'd a batch at a time with a single write, so a run killed at any moment keeps every
finished row; `--resume` skips the inputs already in the CSV (by image_path + page) and drops a trailing
partial line. The JSON (metadata + results) is written at the end from the CSV, so a resumed run's JSON is
complete. Images are read and preprocessed in a background thread while the model generates.
`--workers N` runs N model processes on this machine (scripts/batch_workers.py) and `--ray` an actor pool
on a Ray cluster (scripts/batch_ray.py); either way rows reach the CSV in input order, as above.
"""

from __future__ import annotations

if not __package__:  # run as `python scripts/<tool>.py`: import the toolkit from the repository root
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import csv
import fnmatch
import hashlib
import io
import os
import platform
import re
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from scripts import atomic
from scripts.batch_engine import Item, OCREngine, check_pdf_dpi, iter_file_pages, now  # noqa: F401 - Item, iter_file_pages: API
from scripts.batch_workers import resolve_workers
from scripts.image_io import IMAGE_EXTENSIONS, PDF_DPI

CSV_COLUMNS = ["image_name", "image_path", "text", "success", "processing_time", "error", "timestamp"]
PAGE_RE = re.compile(r"\[page (\d+)\]$")
DEFAULT_CSV = "ocr_results.csv"


# --------------------------------------------------------------------------------------------------
# Inputs: patterns, directories, manifests, shards
# --------------------------------------------------------------------------------------------------


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion: "*.{jpg,png}" -> ["*.jpg", "*.png"] (nested braces work)."""
    depth, start = 0, None
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                body, parts, level, last = pattern[start + 1:i], [], 0, 0
                for j, c in enumerate(body):
                    level += (c == "{") - (c == "}")
                    if c == "," and level == 0:
                        parts.append(body[last:j])
                        last = j + 1
                parts.append(body[last:])
                if len(parts) == 1:  # "{x}" is literal in the shell
                    continue
                head, tail = pattern[:start], pattern[i + 1:]
                return [e for p in parts for e in expand_braces(head + p + tail)]
    return [pattern]


def default_patterns() -> list[str]:
    return ["*" + ext for ext in IMAGE_EXTENSIONS]


def matches(rel_path: str, patterns: Sequence[str]) -> bool:
    """Case-insensitive match of a file's name (or, for patterns with '/', its relative path)."""
    name = rel_path.rsplit("/", 1)[-1].lower()
    rel = rel_path.lower()
    return any(fnmatch.fnmatchcase(rel if "/" in p else name, p.lower()) for p in patterns)


def find_images(directory, pattern: Optional[str] = None, recursive: bool = False) -> list[Path]:
    """Files in `directory` matching `pattern` (brace patterns work; None: every supported image type),
    sorted by relative path. Hidden files and folders (".name") are skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: directory not found")
    patterns = expand_braces(pattern) if pattern else default_patterns()
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for f in files:
            if f.startswith("."):
                continue
            path = Path(root) / f
            rel = path.relative_to(directory).as_posix()
            if matches(rel, patterns) and path.is_file():
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(directory).as_posix())


def read_manifest(manifest) -> list[Path]:
    """One path a line (blank lines and '#' comments skipped); relative paths are relative to the manifest."""
    manifest = Path(manifest)
    base = manifest.resolve().parent
    out = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        out.append(p if p.is_absolute() else base / p)
    return out


def parse_shard(spec: str) -> tuple[int, int]:
    """"I/N" (1 <= I <= N) -> (I, N)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not m:
        raise ValueError(f"--shard must look like I/N (e.g. 1/3), got {spec!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard {spec}: need 1 <= I <= N")
    return i, n


def shard_of(key: str, n: int) -> int:
    """Stable shard (1..n) of an input, from a hash of its path relative to the collection root."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) % n + 1


def select_shard(paths: Sequence[Path], shard: tuple[int, int], root: Optional[Path] = None) -> list[Path]:
    """The inputs of shard I of N. The key is each path relative to `root` (default: the inputs' common
    folder), so the split does not depend on where the collection is mounted or on the list's order."""
    i, n = shard
    if n == 1 or not paths:
        return list(paths)
    absolute = [Path(os.path.abspath(p)) for p in paths]
    if root is None:
        root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    root = Path(os.path.abspath(root))
    out = []
    for p, a in zip(paths, absolute):
        try:
            key = a.relative_to(root).as_posix()
        except ValueError:
            key = a.as_posix()
        if shard_of(key, n) == i:
            out.append(p)
    return out


# --------------------------------------------------------------------------------------------------
# The crash-safe CSV
# --------------------------------------------------------------------------------------------------


def format_rows(rows: Iterable[dict], header: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([_csv_value(r.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return v


def _complete_prefix(data: bytes) -> int:
    """Length of the part of `data` made of complete CSV records (each ends with a newline outside quotes)."""
    end, quotes, pos = 0, 0, 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return end
        quotes += data.count(b'"', pos, nl)
        pos = nl + 1
        if quotes % 2 == 0:
            end, quotes = pos, 0


def _parse_row(rec: list[str]) -> Optional[dict]:
    if len(rec) != len(CSV_COLUMNS) or rec[3] not in ("True", "False"):
        return None
    row = dict(zip(CSV_COLUMNS, rec))
    row["success"] = row["success"] == "True"
    try:
        row["processing_time"] = float(row["processing_time"]) if row["processing_time"] else 0.0
    except ValueError:
        return None
    return row


def read_results_csv(path, repair: bool = False) -> list[dict]:
    """The complete rows of a results CSV. A trailing partial line (a run killed mid-write) is ignored,
    and with `repair` cut off the file so that appends start on a clean line."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    keep = _complete_prefix(data)
    if repair and keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    text = data[:keep].decode("utf-8", errors="replace")
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        return []
    start = 1 if records[0] == CSV_COLUMNS else 0
    rows = []
    for rec in records[start:]:
        row = _parse_row(rec)
        if row is not None:
            rows.append(row)
    return rows


def row_page(row: dict) -> Optional[int]:
    m = PAGE_RE.search(row.get("image_name", ""))
    return int(m.group(1)) if m else None


def row_key(row: dict) -> tuple[str, Optional[int]]:
    return (os.path.abspath(row["image_path"]), row_page(row))


class CSVAppender:
    """Appends whole batches of rows with one write + fsync each."""

    def __init__(self, path, resume: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.exists():
            read_results_csv(self.path, repair=True)
        fresh = not (resume and self.path.exists() and self.path.stat().st_size > 0)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if fresh else os.O_APPEND)
        self.fd = os.open(self.path, flags, 0o644)
        if not fresh:
            os.lseek(self.fd, 0, os.SEEK_END)
        if fresh:
            self._write(format_rows([], header=True))

    def _write(self, text: str) -> None:
        data = text.encode("utf-8")
        while data:
            n = os.write(self.fd, data)
            data = data[n:]
        os.fsync(self.fd)

    def append(self, rows: Sequence[dict]) -> None:
        if rows:
            self._write(format_rows(rows))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------------------------------
# The processor
# --------------------------------------------------------------------------------------------------


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("mlx", "numpy", "pillow", "tokenizers", "tqdm"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


class MLXBatchProcessor:
    """OCR for whole collections: images in, CSV/JSON out.

    `model_path=None` uses the default model (model_registry.default_model_path()). Generation options
    (max_length, num_beams, temperature, do_sample, seed, ...) apply to every image.

    `workers=N` (or "auto": see batch_workers.default_workers) runs N worker processes on this machine,
    each with its own copy of the model; `ray=RayOptions(...)` runs an actor pool on a Ray cluster. Either
    way rows come back in input order and go to the same CSV, so results, resume and failed rows are
    those of one process. With workers or Ray, call close() (or use `with`) when done. PDF pages are
    rendered at `pdf_dpi` (default image_io.PDF_DPI).
    """

    def __init__(self, model_path=None, batch_size: int = 8, verbose: bool = False, dtype: Optional[str] = None,
                 processor=None, queue_size: Optional[int] = None, pdf_dpi: float = PDF_DPI, workers=1, ray=None,
                 **generation):
        from scripts.model_registry import resolve_model_path

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = int(batch_size)
        self.pdf_dpi = check_pdf_dpi(pdf_dpi)
        self.verbose = verbose
        self.queue_size = queue_size or max(2 * self.batch_size, 4)
        self.interrupted = False
        self.last_run: dict = {}
        self.engine: Optional[OCREngine] = None
        self.runner = None
        self.workers = 1 if (processor is not None or ray is not None) else resolve_workers(workers)
        if ray is None and self.workers == 1:
            self.engine = OCREngine(model_path, batch_size=batch_size, dtype=dtype, processor=processor,
                                    verbose=verbose, pdf_dpi=self.pdf_dpi, **generation)
            self.model_path = self.engine.model_path
            return
        if ray is None or not ray.address:  # the model must be here; on a cluster, on every machine
            model_path = resolve_model_path(model_path)
        self.model_path = Path(model_path) if model_path is not None else None
        options = {"model_path": str(self.model_path) if self.model_path else None, "batch_size": self.batch_size,
                   "dtype": dtype, "verbose": verbose, "pdf_dpi": self.pdf_dpi, **generation}
        if ray is not None:
            from scripts.batch_ray import RayRunner

            self.runner = RayRunner(ray, options, verbose=verbose)
        else:
            from scripts.batch_workers import WorkerPool

            self.runner = WorkerPool(self.workers, options)

    # -- the model ---------------------------------------------------------------------------------
    @property
    def processor(self):
        """The loaded model (one process only; workers and Ray actors hold their own)."""
        return self.engine.processor if self.engine is not None else None

    @property
    def config(self):
        return self.engine.config if self.engine is not None else None

    def check_generation(self) -> None:
        """One tiny generate with these options, so a setting the model cannot run fails at once
        (rather than as a failed row for every image). Workers and Ray actors do it as they start."""
        if self.engine is not None:
            self.engine.check_generation()

    def engines(self) -> list[dict]:
        """What produced the rows: one entry per process (model, dtype, generation, device, host)."""
        if self.engine is not None:
            return [self.engine.info()]
        return list(self.runner.info)

    def describe(self) -> str:
        if self.runner is None:
            return "1 process"
        if hasattr(self.runner, "describe"):
            return self.runner.describe()
        return f"{self.workers} worker processes"

    def close(self) -> None:
        """Stop the worker processes / leave the Ray cluster (one started here is shut down)."""
        if self.runner is not None:
            self.runner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the pipeline ------------------------------------------------------------------------------
    def _local_batches(self, paths: Sequence[Path], done: set, on_file) -> Iterator[list[dict]]:
        for batch in self.engine.read(paths, done, self.queue_size, on_file):
            yield self.engine.run_batch(batch, log=self._log)

    def iter_results(self, paths: Sequence, done: Optional[set] = None, show_progress: bool = True,
                     handle_sigint: bool = True) -> Iterator[list[dict]]:
        """Rows, a batch (or a worker's chunk) at a time, in input order, for every page of `paths` whose
        (abspath, page) is not in `done`.

        Reading and preprocessing run in background threads. With `handle_sigint` (main thread only), a
        first Ctrl-C stops after the current batch (self.interrupted becomes True); a second one aborts.
        """
        done = done or set()
        paths = [Path(p) for p in paths]
        paths = [p for p in paths if (os.path.abspath(p), None) not in done]
        self.interrupted = False

        bar = None
        if show_progress:
            from tqdm import tqdm

            bar = tqdm(total=len(paths), unit="line", desc="OCR", dynamic_ncols=True, file=sys.stderr,
                       bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]{postfix}")

        def pages_found(n: int) -> None:  # a multi-page file counts all its pages; a done file none
            if bar is not None and n != 1:
                bar.total += n - 1
                bar.refresh()

        previous_handler = None
        if handle_sigint and threading.current_thread() is threading.main_thread():
            def on_sigint(signum, frame):
                if self.interrupted:
                    raise KeyboardInterrupt
                self.interrupted = True
                self._log("\nInterrupted: finishing the current batch (Ctrl-C again to abort now)...")

            previous_handler = signal.signal(signal.SIGINT, on_sigint)

        if self.runner is None:
            source = self._local_batches(paths, done, pages_found)
        else:
            source = self.runner.iter_chunks(paths, done, pages_found)
        failed = 0
        try:
            for rows in source:
                failed += sum(not r["success"] for r in rows)
                if self.verbose:
                    for r in rows:
                        status = repr(r["text"]) if r["success"] else f"FAILED: {r['error']}"
                        self._log(f"{r['image_name']} ({r['image_path']}): {status}", bar)
                yield rows
                if bar is not None:
                    bar.set_postfix_str(f"failed={failed}" if failed else "", refresh=False)
                    bar.update(len(rows))
                if self.interrupted:
                    break
        finally:
            source.close()
            if bar is not None:
                bar.close()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)

    def _log(self, msg: str, bar=None) -> None:
        if bar is not None:
            bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def run(self, paths: Sequence, output_csv=None, resume: bool = False, text_files: bool = False,
            text_dir=None, root=None, show_progress: bool = True, handle_sigint: bool = True) -> list[dict]:
        """OCR `paths`, appending each batch to `output_csv` (if given). With `resume`, inputs already
        in that CSV are skipped. Returns this run's rows. See self.interrupted and self.last_run."""
        paths = [Path(p) for p in paths]
        done: set = set()
        previous = []
        if resume and output_csv is not None:
            previous = read_results_csv(output_csv)
            done = {row_key(r) for r in previous}
        appender = CSVAppender(output_csv, resume=resume) if output_csv is not None else None
        text_names = _text_file_names(paths, text_dir, root) if text_files else {}
        rows_out: list[dict] = []
        t0 = time.perf_counter()
        try:
            for rows in self.iter_results(paths, done, show_progress=show_progress, handle_sigint=handle_sigint):
                if appender is not None:
                    appender.append(rows)
                if text_files:
                    for r in rows:
                        if r["success"]:
                            _write_text(text_names[os.path.abspath(r["image_path"])], r["page"], r["text"])
                rows_out.extend(rows)
        finally:
            if appender is not None:
                appender.close()
        self.last_run = {"wall_time": time.perf_counter() - t0, "new_rows": len(rows_out),
                         "skipped_rows": len(done), "interrupted": self.interrupted}
        return rows_out

    # -- the API ---------------------------------------------------------------------------
    def process_images(self, paths: Sequence, **run_options) -> list[dict]:
        """OCR a list of image files (every page of multi-page files). Returns result rows (dicts with
        the CSV columns, plus `page`). run_options: output_csv, resume, text_files, text_dir, show_progress."""
        return self.run(paths, **run_options)

    def process_directory(self, directory, pattern: Optional[str] = "*.jpg", recursive: bool = False,
                          **run_options) -> list[dict]:
        """OCR the files of `directory` matching `pattern` (brace patterns work; None: all image types)."""
        run_options.setdefault("root", directory)
        return self.run(find_images(directory, pattern, recursive), **run_options)

    def metadata(self, results: Sequence[dict], **extra) -> dict:
        engines = self.engines()
        first = engines[0] if engines else {}
        total_time = float(sum(float(r.get("processing_time") or 0.0) for r in results))
        ok = sum(bool(r.get("success")) for r in results)
        meta = {
            "total_images": len(results),
            "successful": ok,
            "failed": len(results) - ok,
            "total_time": round(total_time, 4),
            "avg_time_per_image": round(total_time / len(results), 4) if results else 0.0,
            "model": str(self.model_path) if self.model_path is not None else None,
            "model_config": {"model_type": "trocr", "dtype": first.get("dtype")},
            "generation": first.get("generation"),
            "batch_size": self.batch_size,
            "pdf_dpi": self.pdf_dpi,
            "device": first.get("device"),
            "blas": first.get("blas"),
            "workers": self.describe(),
            "platform": platform.platform(),
            "versions": package_versions(),
            "created": now(),
        }
        if len(engines) > 1:  # which processes (and, on Ray, which machines) made this run's rows
            meta["engines"] = [{k: e.get(k) for k in ("host", "device", "pid")} for e in engines]
        meta.update(extra)
        return meta

    @staticmethod
    def export_results_csv(results: Sequence[dict], path) -> Path:
        """Write `results` as a complete CSV (replacing the file atomically)."""
        return atomic.write_text(path, format_rows(results, header=True))

    def export_results_json(self, results: Sequence[dict], path, **extra_metadata) -> Path:
        """Write {"metadata": ..., "results": [...]} (atomically)."""
        out = []
        for r in results:
            r = {c: r.get(c) for c in CSV_COLUMNS} | {"page": r.get("page", row_page(r))}
            r["success"] = bool(r["success"])
            r["processing_time"] = round(float(r["processing_time"] or 0.0), 4)
            out.append(r)
        return atomic.write_json(path, {"metadata": self.metadata(results, **extra_metadata), "results": out})


def _text_file_names(paths: Sequence[Path], text_dir, root) -> dict[str, Path]:
    """abspath -> the stem of its text file: `<stem>_ocr.txt` beside the image (or mirrored under
    text_dir). Two inputs of one folder with one stem (a.png, a.jpg) keep their extension: a.png_ocr.txt."""
    absolute = [Path(os.path.abspath(p)) for p in paths]
    if text_dir is not None:
        root = Path(os.path.abspath(root)) if root is not None else (
            Path(os.path.commonpath([str(a.parent) for a in absolute])) if absolute else Path.cwd())
    seen: dict[tuple, int] = {}
    for a in absolute:
        seen[(a.parent, a.stem)] = seen.get((a.parent, a.stem), 0) + 1
    out = {}
    for a in absolute:
        base = a.stem if seen[(a.parent, a.stem)] == 1 else a.name
        folder = a.parent
        if text_dir is not None:
            try:
                folder = Path(text_dir) / a.parent.relative_to(root)
            except ValueError:
                folder = Path(text_dir)
        out[str(a)] = folder / base
    return out


def _write_text(base: Path, page: Optional[int], text: str, suffix: str = "_ocr.txt") -> None:
    atomic.write_text(base.with_name(base.name + ("" if page is None else f"_page{page}") + suffix), text + "\n")


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Batch OCR with the MLX TrOCR model: crash-safe CSV (resumable), JSON, text files.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    src = p.add_argument_group("inputs (any combination)")
    src.add_argument("--images", nargs="+", metavar="P", help="image files (PDFs too: every page)")
    src.add_argument("--directory", "-d", metavar="D", help="a folder of images")
    src.add_argument("--manifest", metavar="FILE",
                     help="a text file, one image path a line (relative paths: relative to the manifest)")
    src.add_argument("--pattern", help='file pattern for --directory; braces work: "*.{jpg,png}" '
                     f"(default: every supported type: {' '.join(IMAGE_EXTENSIONS)})")
    src.add_argument("--recursive", "-r", action="store_true", help="include subfolders of --directory")
    src.add_argument("--shard", metavar="I/N", help="process only shard I of N (1 <= I <= N); the N CSVs "
                     "together cover the inputs exactly once")
    m = p.add_argument_group("model and generation")
    m.add_argument("--model", metavar="DIR", help="converted MLX model folder (default: models/mlx/default)")
    m.add_argument("--batch-size", type=int, default=8)
    m.add_argument("--max-length", type=int, default=None, help="max tokens per line, start token included")
    m.add_argument("--num-beams", type=int, default=None)
    m.add_argument("--temperature", type=float, default=None, help="sampling temperature (with --do-sample)")
    m.add_argument("--do-sample", action="store_true", help="sample instead of greedy/beam decoding")
    m.add_argument("--seed", type=int, default=None, help="random seed for --do-sample")
    m.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    m.add_argument("--pdf-dpi", type=float, default=PDF_DPI,
                   help="resolution PDF pages are rendered at, one row per page (default: %(default)s)")
    w = p.add_argument_group("parallel work (default: one process)")
    w.add_argument("--workers", default="1", metavar="N",
                   help="worker processes on this machine, each with its own copy of the model, reading its "
                   "images in the background; rows still come out in input order. 'auto': 2 on an NVIDIA GPU "
                   "(one process leaves it mostly idle), 1 on a CPU and on Apple silicon (default: 1)")
    w.add_argument("--ray", action="store_true", help="run on Ray: start a local Ray cluster on this machine "
                   "(needs ./setup_mlx.sh --ray)")
    w.add_argument("--ray-address", metavar="ADDR", help="join a running Ray cluster instead (HOST:PORT of "
                   "`ray start --head`, or 'auto'); implies --ray")
    w.add_argument("--ray-actors", type=int, metavar="N", help="OCR actors (each loads the model once; default: "
                   "as many as the cluster's GPUs, or CPUs, allow at the per-actor share below)")
    w.add_argument("--ray-gpus-per-actor", type=float, default=0.0, metavar="F",
                   help="GPU share of each actor on CUDA machines, e.g. 0.5 for two actors a GPU (default 0: "
                   "actors are placed by CPUs, which is how Apple-silicon Macs are counted)")
    w.add_argument("--ray-cpus-per-actor", type=float, default=1.0, metavar="C",
                   help="CPUs reserved by each actor when --ray-gpus-per-actor is 0; on a CPU machine also its "
                   "BLAS threads (default 1)")
    w.add_argument("--ray-files-per-call", type=int, metavar="N",
                   help="files handed to an actor at a time (default 4 x --batch-size)")
    w.add_argument("--ray-num-cpus", type=int, metavar="N", help="with --ray: CPUs of the local cluster "
                   "(default: all of this machine's)")
    w.add_argument("--ray-object-store-mb", type=int, metavar="MB", help="with --ray: object store of the local "
                   "cluster (default: Ray's, 30%% of memory; rows and paths are all that goes through it)")
    o = p.add_argument_group("outputs")
    o.add_argument("--output-csv", metavar="FILE", help=f"results CSV, appended per batch (default: {DEFAULT_CSV})")
    o.add_argument("--output-json", metavar="FILE", help="results JSON (default: the CSV's name with .json)")
    o.add_argument("--text-files", action="store_true", help="write <image>_ocr.txt beside each image")
    o.add_argument("--text-dir", metavar="DIR", help="with --text-files: write them here instead")
    o.add_argument("--resume", action="store_true", help="skip inputs already in --output-csv")
    o.add_argument("--overwrite", action="store_true", help="replace an existing --output-csv")
    o.add_argument("--verbose", "-v", action="store_true", help="print every result")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def collect_inputs(args) -> tuple[list[Path], Optional[Path]]:
    """(inputs in order without duplicates, the collection root used for shards and --text-dir)."""
    paths: list[Path] = []
    roots = []
    if args.directory:
        paths += find_images(args.directory, args.pattern, args.recursive)
        roots.append(Path(args.directory))
    if args.manifest:
        paths += read_manifest(args.manifest)
        roots.append(Path(args.manifest).resolve().parent)
    if args.images:
        paths += [Path(p) for p in args.images]
    seen, unique = set(), []
    for p in paths:
        a = os.path.abspath(p)
        if a not in seen:
            seen.add(a)
            unique.append(p)
    root = roots[0] if len(roots) == 1 and not args.images else None
    return unique, root


def resume_command(argv: Sequence[str], csv_path: Path) -> str:
    args = [a for a in argv if a not in ("--resume", "--overwrite")]
    if not any(a == "--output-csv" or a.startswith("--output-csv=") for a in args):
        args += ["--output-csv", str(csv_path)]
    return shlex.join([sys.executable, sys.argv[0], *args, "--resume"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.images or args.directory or args.manifest):
        parser.error("give --images, --directory and/or --manifest")
    if args.text_dir and not args.text_files:
        args.text_files = True
    if args.temperature is not None and not args.do_sample:
        print("note: --temperature only matters with --do-sample; decoding stays greedy/beam", file=sys.stderr)

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    try:
        shard = parse_shard(args.shard) if args.shard else (1, 1)
        paths, root = collect_inputs(args)
    except (ValueError, OSError) as e:
        return fail(str(e))
    total_inputs = len(paths)
    paths = select_shard(paths, shard, root)
    csv_path = Path(args.output_csv or DEFAULT_CSV).absolute()
    json_path = Path(args.output_json) if args.output_json else csv_path.with_suffix(".json")
    if csv_path.exists() and csv_path.stat().st_size > 0 and not (args.resume or args.overwrite):
        return fail(f"{csv_path} exists: add --resume to finish that run, or --overwrite to start again")

    ray = None
    if args.ray or args.ray_address:
        from scripts.batch_ray import RayOptions

        ray = RayOptions(address=args.ray_address, actors=args.ray_actors, gpus_per_actor=args.ray_gpus_per_actor,
                         cpus_per_actor=args.ray_cpus_per_actor, files_per_call=args.ray_files_per_call,
                         num_cpus=args.ray_num_cpus, object_store_mb=args.ray_object_store_mb)
    try:
        proc = MLXBatchProcessor(args.model, batch_size=args.batch_size, verbose=args.verbose, dtype=args.dtype,
                                 pdf_dpi=args.pdf_dpi, workers=args.workers, ray=ray, max_length=args.max_length,
                                 num_beams=args.num_beams, temperature=args.temperature,
                                 do_sample=args.do_sample or None, seed=args.seed)
        proc.check_generation()
    except (FileNotFoundError, ValueError, TypeError, ImportError) as e:
        return fail(str(e))

    with proc:
        if args.shard:
            print(f"shard {shard[0]}/{shard[1]}: {len(paths)} of {total_inputs} files", file=sys.stderr)
        if proc.runner is not None:
            print(f"running on {proc.describe()}", file=sys.stderr)
        try:
            proc.run(paths, output_csv=csv_path, resume=args.resume, text_files=args.text_files,
                     text_dir=args.text_dir, root=root, show_progress=not args.no_progress)
        except KeyboardInterrupt:
            print(f"\nAborted. Finished rows are in {csv_path}. To continue:\n  {resume_command(argv, csv_path)}",
                  file=sys.stderr)
            return 130
        except Exception as e:  # noqa: BLE001 - a worker or the cluster failed: say so, keep the rows
            if proc.runner is None:
                raise
            print(f"\nerror: {type(e).__name__}: {e}\nFinished rows are in {csv_path}. To continue:\n  "
                  f"{resume_command(argv, csv_path)}", file=sys.stderr)
            return 1
    run = proc.last_run
    if proc.interrupted:
        print(f"\nStopped after {run['new_rows']} new rows; results so far are in {csv_path}.\n"
              f"To continue where it stopped:\n  {resume_command(argv, csv_path)}", file=sys.stderr)
        return 130

    results = read_results_csv(csv_path)
    extra = {"csv": str(csv_path), "wall_time_last_run": round(run["wall_time"], 4),
             "resumed": bool(args.resume and run["skipped_rows"]), "inputs": total_inputs}
    if args.shard:
        extra["shard"] = f"{shard[0]}/{shard[1]}"
    proc.export_results_json(results, json_path, **extra)
    ok = sum(r["success"] for r in results)
    bad = len(results) - ok
    lines = [f"Done: {len(results)} lines ({ok} succeeded, {bad} failed)"
             + (f"; {run['skipped_rows']} were already done, {run['new_rows']} new" if args.resume else ""),
             f"  CSV:  {csv_path}", f"  JSON: {json_path}"]
    if args.text_files:
        lines.append(f"  text files: {args.text_dir or 'beside each image'} (<image>_ocr.txt)")
    if bad:
        lines.append("Failed:")
        shown = [r for r in results if not r["success"]][:20]
        lines += [f"  {r['image_name']}: {r['error']}" for r in shown]
        if bad > len(shown):
            lines.append(f"  ... and {bad - len(shown)} more (see the error column)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
