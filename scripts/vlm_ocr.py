"""Whole-page OCR with a vision-language model (ChandraOCR) through mlx-vlm; the library behind
scripts/ocr_batch.py.

    from scripts.vlm_ocr import load_vlm, ocr_images, run_ocr_batch
    vlm = load_vlm("models/chandra-mlx")            # an mlx-vlm folder or a hub id
    pages = ocr_images(vlm, [img1, img2])           # same-sized PIL pages -> PageText (html, tokens, status)
    run_ocr_batch(paths, "results.csv", vlm=vlm)    # a whole collection: crash-safe CSV + text files

Generation is mlx-vlm's own `batch_generate` (greedy). What this module adds around it:
- pages are sized once, by us: the longest side to `max_size`, then snapped to the model's patch grid
  with the same rule (transformers' qwen2_vl `smart_resize`) the image processor would apply, so the
  processor's own resize is a no-op and pages of one grid size have one pixel size;
- pages are grouped by that size across the whole collection, so every batch is one shape (no
  padding: mlx-vlm's batch_generate batches an equal-shape group without padding);
- the text of a page is `tokenizer.decode(ids, skip_special_tokens=True)` of the generated ids, as
  transformers (and Chandra's own HF code) produce it. mlx-vlm 0.7's streaming BPE detokenizer differs
  on two edges: it keeps special tokens as text, and drops an incomplete UTF-8 sequence at the end
  instead of writing U+FFFD. The ids are taken from batch_generate through `processor.detokenizer`;
- a page that hit `max_tokens` is flagged (`error:truncated`, its text kept), an empty one `error:empty`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.util
import io
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from PIL import Image

from scripts.batch_engine import Item, check_pdf_dpi, iter_file_pages
from scripts.image_io import IMAGE_EXTENSIONS, PDF_DPI
from scripts.image_io import count_pages as _file_pages
from scripts.mlx_batch_processor import _complete_prefix, _text_file_names, _write_text

# The MLX copy of datalab-to/chandra that the issue names; see WHOLE_PAGE_OCR.md for making your own.
DEFAULT_MODEL = "mlx-community/chandra-bf16"
CSV_COLUMNS = ["image_path", "status", "ocr_text"]

# Chandra's whole-page OCR prompt ("ocr" in chandra/prompts.py of datalab-to/chandra, Apache-2.0),
# rendered as the model was trained to read it. Chandra's layout prompt ("ocr_layout") adds bounding boxes.
CHANDRA_OCR_PROMPT = """OCR this image to HTML.

Only use these tags ['math', 'br', 'i', 'b', 'u', 'del', 'sup', 'sub', 'table', 'tr', 'td', 'p', 'th', \
'div', 'pre', 'h1', 'h2', 'h3', 'h4', 'h5', 'ul', 'ol', 'li', 'input', 'a', 'span', 'img', 'hr', 'tbody', \
'small', 'caption', 'strong', 'thead', 'big', 'code'], and these attributes ['class', 'colspan', 'rowspan', \
'display', 'checked', 'type', 'border', 'value', 'style', 'href', 'alt', 'align'].

Guidelines:
* Inline math: Surround math with <math>...</math> tags. Math expressions should be rendered in \
KaTeX-compatible LaTeX. Use display for block math.
* Tables: Use colspan and rowspan attributes to match table structure.
* Formatting: Maintain consistent formatting with the image, including spacing, indentation, \
subscripts/superscripts, and special characters.
* Images: Include a description of any images in the alt attribute of an <img> tag. Do not fill out the src \
property.
* Forms: Mark checkboxes and radio buttons properly.
* Text: join lines together properly into paragraphs using <p>...</p> tags.  Use <br> tags for line breaks \
within paragraphs, but only when absolutely necessary to maintain meaning.
* Use the simplest possible HTML structure that accurately represents the content of the block.
* Make sure the text is accurate and easy for a human to read and interpret.  Reading order should be \
correct and natural."""

INSTALL_HINT = "mlx-vlm is not installed: run ./setup_mlx.sh --vlm (or pip install -r requirements-vlm.txt)"


class ModelUnavailable(RuntimeError):
    """The model could not be found locally nor fetched; the message says how to get it."""


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class VLM:
    """A loaded mlx-vlm model and its processor, plus where it came from."""

    model: object
    processor: object
    path: Path

    @property
    def grid(self) -> Optional[tuple[int, int, int]]:
        """(factor, min_pixels, max_pixels) of a Qwen-VL image processor (patch * merge px, pixel
        budget), or None for processors without that resize rule."""
        ip = getattr(self.processor, "image_processor", None)
        try:
            return (int(ip.patch_size) * int(ip.merge_size), int(ip.min_pixels), int(ip.max_pixels))
        except (AttributeError, TypeError):
            return None


def _hub_help(model: str, reason: str) -> str:
    return (f"model {model!r} is not a local folder and could not be fetched from the Hugging Face hub "
            f"({reason}).\nOn a machine with internet, download it once and copy the folder here:\n"
            f"    hf download {model} --local-dir models/chandra-mlx\n"
            f"then pass --model models/chandra-mlx. To make an MLX copy from the original weights:\n"
            f"    python -m mlx_vlm.convert --hf-path datalab-to/chandra --mlx-path models/chandra-mlx\n"
            f"(WHOLE_PAGE_OCR.md).")


def resolve_model(model: str) -> Path:
    """A local model folder, or the hub id downloaded (or found in the hub cache); ModelUnavailable else."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelUnavailable(f"{path}: not an mlx-vlm model folder (no config.json)")
        return path.resolve()  # absolute: mlx-vlm would try a relative "a/b" as a hub id too
    if model.count("/") != 1 or model.startswith((".", "/", "~")):
        raise ModelUnavailable(f"{model}: no such model folder")
    try:
        from mlx_vlm.utils import get_model_path
    except ImportError:
        raise ModelUnavailable(INSTALL_HINT) from None
    try:
        return Path(get_model_path(model))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated repo: all need the same help
        raise ModelUnavailable(_hub_help(model, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")) from None


def load_vlm(model: str = DEFAULT_MODEL) -> VLM:
    """Load an mlx-vlm model folder or hub id (Qwen3-VL: Chandra; Qwen3.5: Chandra OCR 2; any model
    mlx-vlm supports)."""
    path = resolve_model(model)
    try:
        import mlx_vlm
    except ImportError:
        raise ModelUnavailable(INSTALL_HINT) from None
    m, processor = mlx_vlm.load(str(path))
    return VLM(m, processor, path)


# --------------------------------------------------------------------------------------------------
# Pages in, text out
# --------------------------------------------------------------------------------------------------


def page_size(width: int, height: int, max_size: int, grid: Optional[tuple[int, int, int]]) -> tuple[int, int]:
    """(width, height) a page is given to the model: longest side `max_size` (0: as it is), then snapped
    to the processor's grid exactly as its own resize would (transformers' qwen2_vl smart_resize)."""
    if max_size:
        scale = max_size / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    if grid is not None:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        factor, min_pixels, max_pixels = grid
        height, width = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return width, height


def prepare_page(img: Image.Image, max_size: int, grid: Optional[tuple[int, int, int]]) -> Image.Image:
    """An RGB page at its model size, resized once (Lanczos, as Chandra scales its pages)."""
    img = img.convert("RGB") if img.mode != "RGB" else img
    size = page_size(img.width, img.height, max_size, grid)
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)


@dataclasses.dataclass
class PageText:
    """One page's result: the model's HTML, its generated token ids, and the CSV status."""

    text: str
    tokens: list[int]
    status: str


def page_status(text: str, n_tokens: int, max_tokens: int) -> str:
    """"ok", "error:empty", or "error:truncated ..." for a page that never emitted end-of-text."""
    if n_tokens >= max_tokens:
        return f"error:truncated (hit --max-tokens {max_tokens}; partial text kept)"
    if not text.strip():
        return "error:empty"
    return "ok"


class _TokenRecorder:
    """Stands in for `processor.detokenizer` during one batch_generate call: batch_generate feeds it each
    sequence's ids (reset, add_token..., finalize, then reads .text) in prompt order. It keeps the ids and
    renders the text as transformers does."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.sequences: list[list[int]] = []
        self._current: list[int] = []

    def reset(self):
        self._current = []

    def add_token(self, token, *args, **kwargs):
        self._current.append(int(token))

    def finalize(self):
        self.sequences.append(self._current)

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self._current, skip_special_tokens=True)


def ocr_images(vlm: VLM, images: Sequence[Image.Image], prompt: str = CHANDRA_OCR_PROMPT,
               max_tokens: int = 8192, verbose: bool = False) -> tuple[list[PageText], object]:
    """Greedy OCR of prepared pages (one pixel size: see prepare_page) in one mlx-vlm batch.
    Returns the pages' results in order and mlx-vlm's BatchStats."""
    from mlx_vlm import batch_generate

    if len({im.size for im in images}) > 1:
        raise ValueError(f"one batch needs one page size, got {sorted({im.size for im in images})}")
    processor = vlm.processor
    tokenizer = processor.tokenizer if hasattr(processor, "tokenizer") else processor
    recorder, original = _TokenRecorder(tokenizer), processor.detokenizer
    processor.detokenizer = recorder
    try:
        response = batch_generate(vlm.model, processor, images=list(images), prompts=[prompt] * len(images),
                                  max_tokens=max_tokens, verbose=verbose)
    finally:
        processor.detokenizer = original
    if len(recorder.sequences) != len(images) or [
            recorder.tokenizer.decode(s, skip_special_tokens=True) for s in recorder.sequences] != list(response.texts):
        # batch_generate no longer reports its ids through processor.detokenizer as 0.7 does
        raise RuntimeError("mlx_vlm.batch_generate did not pass the generated ids through processor.detokenizer "
                           "as expected; this mlx-vlm version is not supported (see requirements-vlm.txt)")
    pages = [PageText(text, ids, page_status(text, len(ids), max_tokens))
             for text, ids in zip(response.texts, recorder.sequences)]
    return pages, response.stats


# --------------------------------------------------------------------------------------------------
# Collections: inputs, batches by shape, the crash-safe CSV
# --------------------------------------------------------------------------------------------------


def row_path(item: Item) -> str:
    """The CSV's image_path: the file as given, "[page N]" added for pages of a multi-page file."""
    return str(item.path) if item.page is None else f"{item.path}[page {item.page}]"


def row_key(image_path: str) -> tuple[str, Optional[int]]:
    """image_path (with an optional "[page N]") -> (absolute file path, page), the resume key."""
    page = None
    if image_path.endswith("]") and "[page " in image_path:
        head, _, num = image_path.rpartition("[page ")
        if num[:-1].isdigit():
            image_path, page = head, int(num[:-1])
    return os.path.abspath(image_path), page


def read_results(csv_path, repair: bool = False) -> list[dict]:
    """The complete rows of a results CSV; a torn last line (a kill mid-write) is ignored, and with
    `repair` cut off so that appending starts on a clean line."""
    csv_path = Path(csv_path)
    if not csv_path.exists():
        return []
    data = csv_path.read_bytes()
    keep = _complete_prefix(data)
    if repair and keep < len(data):
        with open(csv_path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
    records = list(csv.reader(io.StringIO(data[:keep].decode("utf-8", errors="replace"), newline="")))
    if records and records[0] != CSV_COLUMNS:
        raise ValueError(f"{csv_path}: not a results CSV of ocr_batch.py (header {records[0]!r}, "
                         f"expected {','.join(CSV_COLUMNS)})")
    return [dict(zip(CSV_COLUMNS, r)) for r in records[1:]
            if len(r) == 3 and (r[1] == "ok" or r[1].startswith("error:"))]


class ResultsCSV:
    """image_path,status,ocr_text rows, appended a batch at a time with one write + fsync."""

    def __init__(self, path, resume: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (resume and self.path.exists() and self.path.stat().st_size > 0)
        if fresh and self.path.exists() and self.path.stat().st_size > 0:
            raise FileExistsError(f"{self.path} exists: pass --resume to continue it, or remove it to start again")
        if not fresh:
            read_results(self.path, repair=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if fresh:
            self._write([CSV_COLUMNS])

    def _write(self, records) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(records)
        data = buf.getvalue().encode("utf-8")
        while data:
            data = data[os.write(self.fd, data):]
        os.fsync(self.fd)

    def append(self, rows: Sequence[dict]) -> None:
        if rows:
            self._write([[r[c] for c in CSV_COLUMNS] for r in rows])

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def count_pages(paths: Sequence[Path], pdf_dpi: float = PDF_DPI) -> int:
    """Pages in the inputs (multi-page TIFF/WebP/PDF counted from their headers), for the progress bar."""
    total = 0
    for p in paths:
        try:
            total += _file_pages(p, pdf_dpi)
        except Exception:  # noqa: BLE001 - unreadable: one error row
            total += 1
    return total


def batches_by_shape(items: Iterable[Item], batch_size: int, max_buffered: Optional[int] = None) -> Iterator[list[Item]]:
    """Same-size pages in batches of at most `batch_size`, in order of completion. Failed items come out
    alone at once. Pages wait in one bucket per size; when more than `max_buffered` (default
    4 x batch_size) wait, the fullest bucket goes, so a collection of all-different sizes runs with
    small batches instead of holding every page in memory."""
    max_buffered = max_buffered or 4 * batch_size
    buckets: dict[tuple[int, int], list[Item]] = {}
    waiting = 0
    for item in items:
        if item.error is not None:
            yield [item]
            continue
        bucket = buckets.setdefault(item.pixels.size, [])
        bucket.append(item)
        waiting += 1
        if len(bucket) >= batch_size:
            waiting -= len(bucket)
            yield buckets.pop(item.pixels.size)
        elif waiting > max_buffered:
            size = max(buckets, key=lambda s: len(buckets[s]))
            waiting -= len(buckets[size])
            yield buckets.pop(size)
    for size in sorted(buckets, key=lambda s: -len(buckets[s])):
        yield buckets[size]


MARKDOWN_HINT = "--markdown needs markdownify: pip install -r requirements-vlm.txt"


def html_to_markdown(html: str) -> str:
    """Chandra's HTML -> Markdown with markdownify (ATX headings, pipe tables), <math> as $...$ / $$...$$."""
    return _markdown_converter().convert(html).strip() + "\n"


@functools.lru_cache(maxsize=1)
def _markdown_converter():
    try:
        from markdownify import MarkdownConverter
    except ImportError:
        raise ImportError(MARKDOWN_HINT) from None

    class _Converter(MarkdownConverter):
        def convert_math(self, el, text, *args, **kwargs):
            latex = el.get_text().strip()  # raw: markdown escaping (\_) would break the LaTeX
            block = el.has_attr("display") and el.get("display") != "inline"
            return f"\n\n$${latex}$$\n\n" if block else f"${latex}$"

    return _Converter(heading_style="ATX", bullets="-")


def run_ocr_batch(inputs: Sequence[Path], output_csv, *, model: str = DEFAULT_MODEL, vlm: Optional[VLM] = None,
                  root=None, batch_size: int = 8, max_tokens: int = 8192, max_size: int = 1024,
                  prompt: str = CHANDRA_OCR_PROMPT, resume: bool = False, verbose: bool = False,
                  markdown: bool = False, text_dir=None, pdf_dpi: float = PDF_DPI, progress: bool = True) -> dict:
    """OCR every page of `inputs` into `output_csv` (image_path,status,ocr_text) and one
    `<name>_ocr.txt` per page (plus `_ocr.md` with `markdown`) under `text_dir` (default: a folder
    `<csv name>_ocr/` beside the CSV, mirroring the inputs' folders below `root`). PDF pages are
    rendered at `pdf_dpi`.

    Rows are appended and fsync'd a batch at a time, after that batch's text files; a kill loses at most
    the batch in flight, and `resume` skips every page already in the CSV. Returns a summary dict."""
    from tqdm import tqdm

    if batch_size < 1 or max_tokens < 1 or max_size < 0:
        raise ValueError("batch_size and max_tokens must be >= 1, max_size >= 0")
    pdf_dpi = check_pdf_dpi(pdf_dpi)
    if markdown and importlib.util.find_spec("markdownify") is None:
        raise ValueError(MARKDOWN_HINT)
    output_csv = Path(output_csv)
    inputs = list({os.path.abspath(p): Path(p) for p in inputs}.values())  # a file listed twice is read once
    done = {row_key(r["image_path"]) for r in read_results(output_csv)} if resume else set()
    table = ResultsCSV(output_csv, resume=resume)  # refuses to overwrite before the model is loaded
    try:
        vlm = vlm or load_vlm(model)
        text_dir = Path(text_dir) if text_dir is not None else output_csv.with_name(output_csv.stem + "_ocr")
        names = _text_file_names(inputs, text_dir, root)
        grid = vlm.grid
        wanted = {os.path.abspath(p) for p in inputs}
        skipped = sum(1 for path, _ in done if path in wanted)

        def items() -> Iterator[Item]:
            for path in inputs:
                yield from iter_file_pages(path, done, lambda frames: [prepare_page(f, max_size, grid) for f in frames],
                                           pdf_dpi)

        counts = {"ok": 0, "error": 0, "truncated": 0}
        failures: list[str] = []
        total = max(0, count_pages(inputs, pdf_dpi) - skipped)
        t_start = time.perf_counter()
        bar = tqdm(total=total, unit="page", desc="OCR", disable=not progress, dynamic_ncols=True)
        for batch in batches_by_shape(items(), batch_size):
            if batch[0].error is not None:
                rows = [{"image_path": row_path(batch[0]), "status": f"error:{_short_reason(batch[0])}", "ocr_text": ""}]
            else:
                rows = _ocr_batch_rows(vlm, batch, prompt, max_tokens, verbose, bar.write)
                for item, row in zip(batch, rows):
                    if row["status"] == "ok" or row["status"].startswith("error:truncated"):
                        base = names[os.path.abspath(item.path)]
                        _write_text(base, item.page, row["ocr_text"])
                        if markdown:
                            _write_text(base, item.page, html_to_markdown(row["ocr_text"]).rstrip("\n"), "_ocr.md")
            table.append(rows)
            for row in rows:
                if row["status"] == "ok":
                    counts["ok"] += 1
                else:
                    counts["error"] += 1
                    counts["truncated"] += row["status"].startswith("error:truncated")
                    failures.append(f"{row['image_path']}: {row['status']}")
                    bar.write(f"[ocr_batch] {row['image_path']}: {row['status']}")
            bar.update(len(rows))
        bar.close()
    finally:
        table.close()
    elapsed = time.perf_counter() - t_start
    pages = counts["ok"] + counts["error"]
    return {"csv": str(output_csv), "text_dir": str(text_dir), "pages": pages, "ok": counts["ok"],
            "errors": counts["error"], "truncated": counts["truncated"], "skipped": skipped,
            "seconds": elapsed, "pages_per_s": pages / elapsed if elapsed > 0 else 0.0, "failures": failures}


def _short_reason(item: Item) -> str:
    """The read error without the file name image_io puts first (the row names the file already)."""
    reason = item.error
    prefix = f"{item.path}: "
    return reason[len(prefix):] if reason.startswith(prefix) else reason


def _ocr_batch_rows(vlm: VLM, batch: Sequence[Item], prompt: str, max_tokens: int, verbose: bool,
                    write: Callable[[str], None]) -> list[dict]:
    """Rows for one same-size batch. If the batch fails as a whole, each page is tried alone, so one bad
    page is one error row."""
    t0 = time.perf_counter()
    try:
        pages, stats = ocr_images(vlm, [it.pixels for it in batch], prompt, max_tokens)
    except Exception as e:  # noqa: BLE001 - any failure inside generation
        if len(batch) > 1:
            write(f"[ocr_batch] batch of {len(batch)} failed ({type(e).__name__}: {e}); retrying page by page")
            return [row for it in batch for row in _ocr_batch_rows(vlm, [it], prompt, max_tokens, verbose, write)]
        return [{"image_path": row_path(batch[0]), "status": f"error:generation failed ({type(e).__name__}: {e})",
                 "ocr_text": ""}]
    if verbose:
        w, h = batch[0].pixels.size
        dt = time.perf_counter() - t0
        write(f"[ocr_batch] batch of {len(batch)} at {w}x{h}: {dt:.2f} s ({len(batch) / dt:.2f} pages/s), "
              f"prompt {stats.prompt_tokens} tok ({stats.prompt_tps:.0f} tok/s), generated "
              f"{stats.generation_tokens} tok ({stats.generation_tps:.1f} tok/s), peak memory {stats.peak_memory:.2f} GB")
    return [{"image_path": row_path(it), "status": p.status, "ocr_text": p.text} for it, p in zip(batch, pages)]


def find_inputs(images_dir=None, manifest=None) -> tuple[list[Path], Optional[Path]]:
    """(files, root): every supported image under `images_dir` (recursive), or the manifest's paths."""
    from scripts.mlx_batch_processor import find_images, read_manifest

    if images_dir is not None:
        return find_images(images_dir, recursive=True), Path(images_dir)
    return read_manifest(manifest), None


SUPPORTED = ", ".join(e.lstrip(".").upper() for e in IMAGE_EXTENSIONS)
