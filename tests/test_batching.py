"""Batches of similar line width (so a batch finishes decoding together), results in input order."""

from __future__ import annotations

import numpy as np
from PIL import Image

from scripts import form_pipeline as fp
from scripts.image_io import batches_by_width


def lines(widths, height=32):
    return [Image.new("RGB", (w, height), (255, 255, 255)) for w in widths]


def test_batches_by_width_sorts_and_balances(tmp_path):
    widths = [300, 40, 500, 90, 120, 60, 800, 200, 35, 410, 75, 650, 100, 250, 55, 330, 900, 45]
    batches = batches_by_width(lines(widths), 8)
    assert [len(b) for b in batches] == [6, 6, 6]  # 18 at 8: three equal batches, not 8, 8, 2
    assert sorted(i for b in batches for i in b) == list(range(len(widths)))
    flat = [widths[i] for b in batches for i in b]
    assert flat == sorted(widths)
    # paths are read as far as their header; numpy arrays by shape; unreadable inputs still get a batch
    path = tmp_path / "wide.png"
    Image.new("RGB", (1000, 20)).save(path)
    mixed = [path, np.zeros((20, 10, 3), np.uint8), tmp_path / "missing.png", Image.new("RGB", (100, 20))]
    assert batches_by_width(mixed, 4) == [[2, 1, 3, 0]]
    assert batches_by_width([], 4) == []


def test_recognize_all_keeps_crop_order():
    widths = [400, 50, 300, 60, 500]
    seen = []

    class Engine:
        name = "fake"

        def recognize(self, images):
            seen.append([im.size[0] for im in images])
            return [(f"w{im.size[0]}", 0.5) for im in images]

    out = fp.recognize_all(Engine(), lines(widths), batch_size=2)
    assert [t for t, *_ in out] == [f"w{w}" for w in widths]
    assert seen == [[50, 60], [300, 400], [500]]


def test_process_batch_groups_widths_and_returns_input_order(tiny_model, monkeypatch):
    from scripts import mlx_processor
    from scripts.mlx_processor import load_mlx_processor

    _, mlx_dir = tiny_model
    proc = load_mlx_processor(mlx_dir)
    rng = np.random.default_rng(0)
    widths = [200, 40, 160, 48, 120]
    images = [Image.fromarray(rng.integers(0, 256, (32, w, 3), dtype=np.uint8)) for w in widths]
    one_by_one = [proc.process_image(im, max_new_tokens=6) for im in images]
    sizes = []
    real = mlx_processor.generate_tokens

    def spy(model, pixels, cfg):
        sizes.append(pixels.shape[0])
        return real(model, pixels, cfg)

    monkeypatch.setattr(mlx_processor, "generate_tokens", spy)
    assert proc.process_batch(images, batch_size=2, max_new_tokens=6, show_progress=False) == one_by_one
    assert sizes == [2, 2, 1]
    scored = proc.process_batch(images, batch_size=4, max_new_tokens=6, show_progress=False, return_scores=True)
    assert [t for t, _ in scored] == one_by_one and sizes[3:] == [3, 2]
