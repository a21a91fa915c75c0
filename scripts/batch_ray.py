"""Batch OCR on a Ray cluster: Ray Data reads the list of files and runs the OCR in an actor pool.

Each actor is a `RayOCRActor` holding one `OCREngine` (the model is loaded once per actor), called by
`Dataset.map_batches` with `ActorPoolStrategy`; it reads its files itself (images never travel through
the object store, only paths out and result rows back) with the same background reader as one process.
An unreadable file is a failed row made inside the actor, never a failed Ray task. Ray Data keeps the
input order (`preserve_order`), so the driver writes rows to the batch processor's crash-safe CSV in the
same order as a plain run, and `--resume` works the same way.

The driver ships the `scripts` package to the cluster (`runtime_env` py_modules), so every machine runs
the driver's code; each machine needs the Python packages (./setup_mlx.sh) and the model folder at the
same path (or a shared folder).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

PACKAGE_DIR = Path(__file__).resolve().parent


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data comes with the [data] extra
    except ImportError:
        raise ImportError("Ray is not installed: ./setup_mlx.sh --ray (or pip install -r requirements-ray.txt)") \
            from None
    return ray


@dataclasses.dataclass
class RayOptions:
    """How to run on Ray. address None starts a local cluster (num_cpus/object_store_mb size it);
    "auto" or "HOST:PORT" joins a running one (`ray start --head`). actors None: as many as the
    cluster's GPUs (or CPUs) allow at gpus_per_actor (or cpus_per_actor) each."""

    address: Optional[str] = None
    actors: Optional[int] = None
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    files_per_call: Optional[int] = None
    num_cpus: Optional[int] = None
    object_store_mb: Optional[int] = None


class RayOCRActor:
    """A Ray Data callable class: a batch of {"index", "path", "done"} in, one row per page out."""

    def __init__(self, options: dict, blas_threads: Optional[int] = None):
        from scripts.batch_engine import OCREngine
        from scripts.cpu_blas import set_blas_threads

        blas_threads = blas_threads if blas_threads and set_blas_threads(blas_threads) else None
        self.engine = OCREngine(**options)
        self.engine.check_generation()
        self.info = json.dumps(self.engine.info() | {"pid": os.getpid(), "blas_threads": blas_threads})

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        paths = [str(p) for p in batch["path"]]
        index = {p: int(i) for p, i in zip(paths, batch["index"])}
        done = {(os.path.abspath(p), page) for p, pages in zip(paths, batch["done"]) for page in json.loads(pages)}
        rows = self.engine.rows_for(paths, done)
        out = {"index": np.array([index[r["image_path"]] for r in rows], dtype=np.int64),
               "page": np.array([-1 if r["page"] is None else r["page"] for r in rows], dtype=np.int64),
               "engine": np.array([self.info] + [""] * (len(rows) - 1), dtype=object)}
        for c in ("image_name", "image_path", "text", "error", "timestamp"):
            out[c] = np.array([r[c] for r in rows], dtype=object)
        out["success"] = np.array([r["success"] for r in rows], dtype=bool)
        out["processing_time"] = np.array([r["processing_time"] for r in rows], dtype=np.float64)
        return out


class RayRunner:
    """The batch processor's runner on Ray: `iter_chunks` yields rows in input order, as WorkerPool does."""

    def __init__(self, ray_options: RayOptions, engine_options: dict, verbose: bool = False):
        ray = require_ray()
        self.ray = ray
        self.opts = ray_options
        self.options = dict(engine_options)
        self.batch_size = int(self.options.get("batch_size", 8))
        self.started_cluster = False
        if not ray.is_initialized():
            runtime_env = {"py_modules": [str(PACKAGE_DIR)]}
            kwargs = {"runtime_env": runtime_env, "log_to_driver": verbose, "logging_level": logging.ERROR}
            if ray_options.address:
                ray.init(address=ray_options.address, **kwargs)
            else:
                store = ray_options.object_store_mb * 1024 ** 2 if ray_options.object_store_mb else None
                ray.init(num_cpus=ray_options.num_cpus, object_store_memory=store, include_dashboard=False, **kwargs)
                self.started_cluster = True
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows in input order, as a plain run writes them
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # progress and plans: the batch processor says
        ctx.enable_progress_bars = False  # the batch processor shows its own
        ctx.print_on_execution_start = False
        resources = ray.cluster_resources()
        self.actors = ray_options.actors or self._auto_actors(resources)
        self.blas_threads = None if ray_options.gpus_per_actor else max(1, int(ray_options.cpus_per_actor))
        self.info: list[dict] = []

    def _auto_actors(self, resources: dict) -> int:
        if self.opts.gpus_per_actor:
            gpus = resources.get("GPU", 0)
            if not gpus:
                raise ValueError("--ray-gpus-per-actor: the Ray cluster has no GPUs (Apple-silicon Macs count as "
                                 "CPU nodes: leave it at 0 and set each node's ray start --num-cpus)")
            return max(1, int(gpus / self.opts.gpus_per_actor + 1e-9))
        return max(1, int(resources.get("CPU", 1) / self.opts.cpus_per_actor + 1e-9))

    def describe(self) -> str:
        where = self.opts.address or "a local cluster"
        each = f"{self.opts.gpus_per_actor:g} GPU" if self.opts.gpus_per_actor else f"{self.opts.cpus_per_actor:g} CPU"
        return f"Ray ({where}): {self.actors} actors, {each} each"

    def iter_chunks(self, paths: Sequence, done: set, on_file: Optional[Callable[[int], None]] = None
                    ) -> Iterator[list[dict]]:
        """Rows for `paths` (pages in `done` skipped), an actor call's worth at a time, in input order."""
        ray = self.ray
        paths = [Path(p) for p in paths]
        if not paths:
            return
        pages_done: dict[str, list] = {}
        for key, page in done:
            if page is not None:
                pages_done.setdefault(key, []).append(page)
        items = [{"index": i, "path": str(p), "done": json.dumps(pages_done.get(os.path.abspath(p), []))}
                 for i, p in enumerate(paths)]
        # 4 batches a call amortise the first read of each call; fewer when that would leave actors idle
        per_call = self.opts.files_per_call or max(1, min(4 * self.batch_size, -(-len(items) // self.actors)))
        ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // per_call)))
        ds = ds.map_batches(RayOCRActor, fn_constructor_args=(self.options, self.blas_threads),
                            batch_size=per_call, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=self.actors),
                            num_gpus=self.opts.gpus_per_actor or None,
                            num_cpus=0 if self.opts.gpus_per_actor else self.opts.cpus_per_actor)
        seen = set()
        counts: dict[int, int] = {}
        next_file = 0
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            rows = table.to_pylist()
            for r in rows:
                engine = r.pop("engine")
                if engine and engine not in seen:  # one per actor call: which actor, host and device
                    seen.add(engine)
                    self.info.append(json.loads(engine))
                counts[r["index"]] = counts.get(r["index"], 0) + 1
                r["page"] = None if r["page"] < 0 else r["page"]
            if rows:
                last = rows[-1]["index"]
                if on_file is not None:
                    for i in range(next_file, last):  # files before the last one are complete
                        on_file(counts.pop(i, 0))
                next_file = last
            yield [{k: v for k, v in r.items() if k != "index"} for r in rows]
        if on_file is not None:
            for i in range(next_file, len(paths)):
                on_file(counts.pop(i, 0))

    def close(self) -> None:
        if self.started_cluster and self.ray.is_initialized():
            self.ray.shutdown()
        self.started_cluster = False

