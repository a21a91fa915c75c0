"""One process's share of batch OCR: read the pages of files, generate, one result row per page.

`OCREngine` holds a loaded model and turns lists of files into rows; `prefetched_batches` reads and
preprocesses images in a background thread so that the model never waits for the disk. The batch
processor uses both in its own process, and every worker process or Ray actor runs one engine
(scripts/batch_workers.py, scripts/batch_ray.py), so every path gives the same rows.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import queue
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from scripts.image_io import PDF_DPI, ImageReadError, open_pages


@dataclasses.dataclass
class Item:
    """One unit of work: a page of a file (page None: the file as a whole / a single-page file)."""

    path: Path
    page: Optional[int] = None
    pages: int = 1
    pixels: Optional[np.ndarray] = None
    error: Optional[str] = None
    load_time: float = 0.0

    @property
    def name(self) -> str:
        return self.path.name if self.page is None else f"{self.path.name}[page {self.page}]"

    @property
    def key(self) -> tuple[str, Optional[int]]:
        return (os.path.abspath(self.path), self.page)


def _reason(e: BaseException) -> str:
    return str(e) if isinstance(e, ImageReadError) else f"{type(e).__name__}: {e}"


def iter_file_pages(path: Path, done: set, preprocess, pdf_dpi: Optional[float] = None) -> Iterator[Item]:
    """Items for every page of `path` not in `done`, each preprocessed, or one failed item for the file.

    A bad page of a multi-page file (TIFF, PDF) fails alone; the other pages are still read. PDF pages
    are rendered at `pdf_dpi` (default image_io.PDF_DPI).
    """
    abspath = os.path.abspath(path)
    t0 = time.perf_counter()
    try:
        pages = open_pages(path, pdf_dpi)
    except Exception as e:  # noqa: BLE001 - every unreadable file becomes a failed row
        yield Item(path, error=_reason(e), load_time=time.perf_counter() - t0)
        return
    with pages:
        n = len(pages)
        for i in range(n):
            page = None if n == 1 else i + 1
            if (abspath, page) in done:
                continue
            t0 = time.perf_counter()
            item = Item(path, page=page, pages=n)
            try:
                item.pixels = preprocess([pages.read(i, "RGB")])[0]
            except Exception as e:  # noqa: BLE001
                item.error = _reason(e)
            item.load_time = time.perf_counter() - t0
            yield item


# --------------------------------------------------------------------------------------------------
# Reading ahead of the model
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ChunkEnd:
    """Marks that every item of chunk `tag` has been read; `counts[i]` items came from its i-th file."""

    tag: object
    counts: list


def _read_chunks(chunks: Iterable, preprocess, q: queue.Queue, stop: threading.Event, on_file, pdf_dpi) -> None:
    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for tag, paths, done in chunks:
            counts = []
            for path in paths:
                if stop.is_set():
                    return
                n = 0
                for item in iter_file_pages(Path(path), done, preprocess, pdf_dpi):
                    n += 1
                    if not put(item):
                        return
                counts.append(n)
                if on_file is not None:
                    on_file(n)
            if not put(ChunkEnd(tag, counts)):
                return
    except BaseException as e:  # noqa: BLE001 - never leave the consumer waiting
        put(e)
    finally:
        put(None)


def prefetched_batches(chunks: Iterable, preprocess, batch_size: int, queue_size: Optional[int] = None,
                       on_file: Optional[Callable[[int], None]] = None, pdf_dpi: Optional[float] = None
                       ) -> Iterator[tuple[list, Optional[ChunkEnd]]]:
    """(items, end) batches of at most `batch_size` preprocessed pages, read by a background thread.

    `chunks` yields (tag, paths, done): the pages of each path whose (abspath, page) is not in `done`.
    A batch never spans two chunks; the last batch of a chunk comes with its ChunkEnd (a chunk with
    nothing left to read gives ([], end)), every other batch with None. `on_file(n)` is called from the
    reader thread when a file has given its n items. PDF pages are rendered at `pdf_dpi`. Closing the
    generator stops the reader.
    """
    q: queue.Queue = queue.Queue(maxsize=queue_size or max(2 * batch_size, 4))
    stop = threading.Event()
    reader = threading.Thread(target=_read_chunks, args=(chunks, preprocess, q, stop, on_file, pdf_dpi),
                              name="ocr-reader", daemon=True)
    reader.start()
    try:
        batch: list[Item] = []
        while True:
            x = q.get()
            if x is None:
                if batch:
                    yield batch, None
                return
            if isinstance(x, BaseException):
                raise x
            if isinstance(x, ChunkEnd):
                yield batch, x
                batch = []
                continue
            batch.append(x)
            if len(batch) == batch_size:
                yield batch, None
                batch = []
    finally:
        stop.set()
        reader.join(timeout=5)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


def check_pdf_dpi(pdf_dpi) -> float:
    pdf_dpi = float(pdf_dpi)
    if not 10 <= pdf_dpi <= 1200:
        raise ValueError(f"pdf_dpi must be 10-1200, got {pdf_dpi}")
    return pdf_dpi


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


class OCREngine:
    """A loaded model and its generation options: batches of pages in, result rows out.

    `model_path=None` uses the default model (model_registry.default_model_path()). Generation options
    (max_length, num_beams, temperature, do_sample, seed, ...) apply to every image. PDF pages are
    rendered at `pdf_dpi` (default image_io.PDF_DPI).
    """

    def __init__(self, model_path=None, batch_size: int = 8, dtype: Optional[str] = None, processor=None,
                 verbose: bool = False, pdf_dpi: float = PDF_DPI, **generation):
        from scripts.model_registry import resolve_model_path

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.pdf_dpi = check_pdf_dpi(pdf_dpi)
        if processor is None:
            from scripts.mlx_processor import load_mlx_processor

            model_path = resolve_model_path(model_path)
            processor = load_mlx_processor(model_path, dtype=dtype)
        self.processor = processor
        self.model_path = Path(model_path) if model_path is not None else getattr(processor, "path", None)
        self.batch_size = int(batch_size)
        self.verbose = verbose
        self.generation = {k: v for k, v in generation.items() if v is not None}
        self.config = processor.generation_options(**self.generation)  # validates the options now
        if self.config.num_return_sequences != 1:
            raise ValueError("the batch processor writes one text per image: num_return_sequences must be 1")

    def check_generation(self) -> None:
        """One tiny generate with these options, so a setting the model cannot run fails at once
        (rather than as a failed row for every image)."""
        h, w = self.processor.preprocessor.size
        blank = np.zeros((1, h, w, 3), dtype=np.float32)
        self.processor.generate(blank, **{**self.generation, "max_length": 2, "max_new_tokens": None})

    def info(self) -> dict:
        """What produced the rows: model, dtype, generation options, device, host."""
        import mlx.core as mx

        from scripts import cpu_blas

        return {"model": str(self.model_path) if self.model_path is not None else None,
                "dtype": model_dtype(self.processor), "generation": dataclasses.asdict(self.config),
                "batch_size": self.batch_size, "pdf_dpi": self.pdf_dpi, "device": str(mx.default_device()),
                "blas": cpu_blas.blas() if mx.default_device() == mx.cpu else None, "host": platform.node()}

    def read(self, paths: Sequence, done: Optional[set] = None, queue_size: Optional[int] = None,
             on_file=None) -> Iterator[list[Item]]:
        """Batches of preprocessed pages of `paths` (pages in `done` skipped), read ahead in a thread."""
        for batch, _ in prefetched_batches([(None, paths, done or set())], self.processor.preprocess,
                                           self.batch_size, queue_size, on_file, self.pdf_dpi):
            if batch:
                yield batch

    def rows_for(self, paths: Sequence, done: Optional[set] = None) -> list[dict]:
        """Every row of `paths` (one a page, one for each unreadable file), in order."""
        return [r for batch in self.read(paths, done) for r in self.run_batch(batch)]

    def _generate(self, pixels: np.ndarray) -> list[str]:
        ids = self.processor.generate(pixels, **self.generation)
        return self.processor.batch_decode(ids)

    def run_batch(self, items: list[Item], log: Optional[Callable[[str], None]] = None) -> list[dict]:
        """Rows for `items`; if the batch fails to generate, each item is retried alone, so one bad
        item is one failed row."""
        good = [it for it in items if it.error is None]
        texts: dict[int, str] = {}
        errors: dict[int, str] = {}
        t0 = time.perf_counter()
        if good:
            try:
                out = self._generate(np.stack([it.pixels for it in good]))
                texts = {id(it): t for it, t in zip(good, out)}
            except Exception as batch_error:  # noqa: BLE001 - one bad item must fail alone
                if self.verbose and log is not None:
                    log(f"batch generate failed ({type(batch_error).__name__}: {batch_error}); "
                        "retrying one image at a time")
                for it in good:
                    try:
                        texts[id(it)] = self._generate(it.pixels[None])[0]
                    except Exception as e:  # noqa: BLE001
                        errors[id(it)] = f"generation failed: {type(e).__name__}: {e}"
        gen_time = (time.perf_counter() - t0) / max(len(good), 1)
        stamp = now()
        rows = []
        for it in items:
            err = it.error or errors.get(id(it))
            rows.append({
                "image_name": it.name,
                "image_path": str(it.path),
                "text": "" if err else texts[id(it)],
                "success": err is None,
                "processing_time": it.load_time + (gen_time if it.error is None else 0.0),
                "error": err or "",
                "timestamp": stamp,
                "page": it.page,
            })
        return rows


def model_dtype(processor) -> Optional[str]:
    try:
        from mlx.utils import tree_flatten

        return str(tree_flatten(processor.model.parameters())[0][1].dtype)
    except Exception:  # noqa: BLE001
        return None
