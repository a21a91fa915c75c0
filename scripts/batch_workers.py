"""Several OCR worker processes on one machine, results in input order.

One MLX process does not fill a GPU: a second one adds lines/s (BENCHMARKS.md, "Several workers and Ray":
on the H200, batch 32, 1 process 116.8 lines/s, 2 processes 205.1, 4 processes 291.3; at batch 128, 150.1
and 194.3, and 4 processes crashed in MLX's CUDA backend).
`WorkerPool` starts N processes (spawned, never forked: MLX and its GPU context do not survive a fork),
each loading the model once into its own `OCREngine` and reading its images in a background thread, so
image decoding and resizing stay off the model's critical path. The parent hands out chunks of files and
gets back their rows, which it yields in input order; the batch processor writes them to its crash-safe
CSV exactly as in one process.

On a CPU, the workers share the cores: each gets cores // N BLAS threads (MLX's CPU ops themselves run
on one thread per process), so N workers never ask for more threads than there are cores.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import warnings
from itertools import count
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

_RUN_IDS = count(1)
CUDA_SAFE_WORKERS = 6  # MLX processes sharing one NVIDIA GPU that ran, with gpu_memory_share (resolve_workers)


def default_workers(device: Optional[str] = None) -> int:
    """`--workers auto`: 2 on an NVIDIA GPU (measured on the H200: 2 processes give 1.76x one process at
    batch 32, 1.86x at batch 64 and 1.30x at batch 128; 4 give 2.50x at batch 32 and 3.24x at batch 64, but
    crashed once of twice at batch 128 before gpu_memory_share, and 6 or 8 every time; with the share 6 ran,
    only 1.08x faster than 4, and 8 did not finish); 1 on a CPU and on
    Apple silicon, where it has not been measured to help (BENCHMARKS.md: on a busy 2-core CPU 2 workers gave
    1.7x, with other jobs competing for the cores)."""
    return 2 if _on_nvidia_gpu(device) else 1


def _on_nvidia_gpu(device: Optional[str] = None) -> bool:
    """MLX's device (default: the current one) is a GPU and not Apple silicon's."""
    if device is None:
        import mlx.core as mx

        device = str(mx.default_device())
    return "gpu" in device.lower() and sys.platform != "darwin"


def resolve_workers(workers) -> int:
    if workers in (None, "auto"):
        return default_workers()
    try:
        n = int(workers)
    except (TypeError, ValueError):
        raise ValueError(f"workers must be a number >= 1 or 'auto', got {workers!r}") from None
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {n}")
    if n > CUDA_SAFE_WORKERS and _on_nvidia_gpu():
        warnings.warn(f"{n} MLX processes on one NVIDIA GPU: on the H200 (MLX 0.32.4; BENCHMARKS.md, 2026-12-03) "
                      f"8 did not finish 1,024 lines in 4 minutes even with each process's memory share, and "
                      f"without it 6 and 8 crashed with 'illegal memory access'; {CUDA_SAFE_WORKERS} or fewer ran",
                      RuntimeWarning, stacklevel=2)
    return n


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: Optional[int] = None) -> int:
    return max(1, (cores or usable_cores()) // workers)


class WorkerError(RuntimeError):
    """A worker process could not start or died; rows written so far are kept (use --resume)."""


def gpu_memory_share(workers: int) -> Optional[int]:
    """Bytes of GPU memory each of `workers` MLX processes on one NVIDIA GPU may hold, or None (one worker,
    or not such a GPU). Each process's allocator otherwise sizes itself for the whole GPU and keeps freed
    buffers cached, so several together can run the GPU out of memory, which MLX's CUDA backend reports as
    `illegal memory access` (ml-explore/mlx#2821)."""
    if workers <= 1 or not _on_nvidia_gpu():
        return None
    import mlx.core as mx

    return int(mx.get_memory_limit() // workers)


def _worker_main(wid: int, tasks, results, options: dict, blas_threads: Optional[int],
                 memory_share: Optional[int] = None) -> None:
    """One worker process: load the model, then turn chunks of files into rows until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if memory_share:
        import mlx.core as mx

        mx.set_memory_limit(memory_share)
        mx.set_cache_limit(memory_share // 4)  # freed buffers beyond this go back to the GPU for the others
    if blas_threads:
        from scripts.cpu_blas import set_blas_threads

        blas_threads = blas_threads if set_blas_threads(blas_threads) else None
    try:
        from scripts.batch_engine import OCREngine, prefetched_batches

        engine = OCREngine(**options)
        engine.check_generation()
        info = engine.info() | {"pid": os.getpid(), "blas_threads": blas_threads, "gpu_memory_share": memory_share}
    except BaseException as e:  # noqa: BLE001 - the parent re-raises it
        results.put(("error", wid, _picklable(e)))
        return
    results.put(("ready", wid, info))
    parent = os.getppid()

    def chunks():
        while True:
            try:
                task = tasks.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:  # the parent was killed: do not linger
                    return
                continue
            if task is None:
                return
            tag, paths, done = task
            yield tag, paths, done

    rows: list[dict] = []
    try:
        for batch, end in prefetched_batches(chunks(), engine.processor.preprocess, engine.batch_size,
                                             pdf_dpi=engine.pdf_dpi):
            rows.extend(engine.run_batch(batch))
            if end is not None:
                results.put(("rows", wid, end.tag, rows, end.counts))
                rows = []
    except BaseException as e:  # noqa: BLE001
        results.put(("died", wid, _picklable(e)))


def _picklable(e: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(e).__name__}: {e}")


class WorkerPool:
    """N OCR worker processes, each with its own model; `iter_chunks` yields rows in input order.

    `options` are OCREngine's (model_path, batch_size, dtype, verbose, generation options). The pool
    starts in the constructor and raises what a worker raised if the model cannot be loaded or the
    generation options cannot run. Use as a context manager or call close().
    """

    def __init__(self, workers: int, options: dict, chunk_files: Optional[int] = None,
                 blas_threads: Optional[int] = None, start_timeout: float = 600.0):
        import mlx.core as mx

        self.workers = int(workers)
        self.options = dict(options)
        self.chunk_files = int(chunk_files or options.get("batch_size", 8))
        on_cpu = "cpu" in str(mx.default_device()).lower()
        self.blas_threads = blas_threads or (threads_per_worker(self.workers) if on_cpu else None)
        self.memory_share = gpu_memory_share(self.workers)
        ctx = mp.get_context("spawn")
        self.tasks = ctx.Queue()
        self.results = ctx.Queue()
        self.procs = [ctx.Process(target=_worker_main, name=f"ocr-worker-{i}", daemon=True,
                                  args=(i, self.tasks, self.results, self.options, self.blas_threads,
                                        self.memory_share))
                      for i in range(self.workers)]
        self.info: list[dict] = []
        for p in self.procs:
            p.start()
        try:
            self._wait_ready(start_timeout)
        except BaseException:
            self.close(timeout=1)
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready = {}
        while len(ready) < self.workers:
            msg = self._get(deadline)
            if msg[0] == "error":
                raise msg[2]
            if msg[0] == "ready":
                ready[msg[1]] = msg[2]
        self.info = [ready[i] for i in sorted(ready)]

    def _get(self, deadline: Optional[float] = None):
        """The next message from the workers; raises WorkerError if one of them died meanwhile."""
        while True:
            try:
                return self.results.get(timeout=0.5)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise WorkerError(f"{dead[0].name} died (exit code {dead[0].exitcode}); "
                                      "the rows written so far are kept, --resume finishes the run") from None
                if deadline is not None and time.monotonic() > deadline:
                    raise WorkerError("the worker processes did not start in time") from None

    def iter_chunks(self, paths: Sequence, done: set, on_file: Optional[Callable[[int], None]] = None,
                    window: Optional[int] = None) -> Iterator[list[dict]]:
        """Rows for `paths` (pages in `done` skipped), a chunk of files at a time, in input order.

        At most `window` chunks are out at once (default 3 per worker: one generating, two read ahead),
        so a slow chunk holds back at most that many finished ones in memory. Closing the generator
        early (Ctrl-C) drops the chunks not yet handed out; results of those in flight are ignored.
        """
        run = next(_RUN_IDS)
        paths = [Path(p) for p in paths]
        chunks = [paths[i:i + self.chunk_files] for i in range(0, len(paths), self.chunk_files)]
        window = window or 3 * self.workers
        pages_done: dict[str, set] = {}
        for key in done:
            pages_done.setdefault(key[0], set()).add(key)
        finished: dict[int, tuple[list, list]] = {}
        sent = 0
        try:
            for want in range(len(chunks)):
                while sent < len(chunks) and sent < want + window:
                    part = chunks[sent]
                    part_done = set().union(*(pages_done.get(os.path.abspath(p), ()) for p in part))
                    self.tasks.put(((run, sent), [str(p) for p in part], part_done))
                    sent += 1
                while want not in finished:
                    msg = self._get()
                    if msg[0] == "died":
                        raise WorkerError(f"ocr-worker-{msg[1]} failed: {type(msg[2]).__name__}: {msg[2]}")
                    if msg[0] == "rows" and msg[2][0] == run:
                        finished[msg[2][1]] = (msg[3], msg[4])
                rows, counts = finished.pop(want)
                if on_file is not None:
                    for n in counts:
                        on_file(n)
                yield rows
        finally:
            self._drain_tasks()

    def _drain_tasks(self) -> None:
        while True:
            try:
                self.tasks.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers (they finish the chunk in hand), then end any that do not stop in time."""
        if not self.procs:
            return
        for _ in self.procs:
            try:
                self.tasks.put(None)
            except (OSError, ValueError):
                break
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(2)
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
