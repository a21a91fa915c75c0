"""MLX trainer: loss goes down, checkpoints resume exactly, exports load in MLX and in transformers."""

import csv
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from scripts import mlx_trainer as T
from scripts.synth_data import FALLBACK_FONT, render_line

LINES = ["Calle 45 # 12-30", "María Pérez", "$ 1.250.000", "12/03/1985", "Sí", "juan@correo.com"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("lines")
    (root / "images").mkdir()
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "text"])
        for i, text in enumerate(LINES):
            render_line(text, FALLBACK_FONT, height=32, rng=i).save(root / "images" / f"{i}.png")
            w.writerow([f"images/{i}.png", text])
    return root / "manifest.csv"


def new_trainer(tmp_path, **kw):
    args = T.build_parser().parse_args(["train", "--out", str(tmp_path), "--arch", "tiny"])
    model, processor_dir, _ = T.build_model(args)
    opts = dict(lr=3e-3, warmup=5, total_steps=200, label_smoothing=0.0, seed=0)
    opts.update(kw)
    return T.Trainer(model, processor_dir, **opts)


def batches(manifest, batch_size=6, augment=0.0):
    rows = T.read_labels(manifest)
    return T.BatchStream(T.ManifestSource(rows, seed=0, augment=augment), (32, 128), batch_size, workers=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, manifest):
    """A tiny model overfit on six lines: (trainer, losses, run folder)."""
    out = tmp_path_factory.mktemp("run")
    trainer = new_trainer(out)
    stream = batches(manifest)
    losses = [trainer.train_step([stream.batch(trainer.step)])["loss"] for _ in range(120)]
    return trainer, losses, out


def test_manifest_formats(tmp_path, manifest):
    rows = T.read_labels(manifest)
    assert [r["text"] for r in rows] == LINES and Path(rows[0]["image"]).is_absolute()
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps({"image": r["image"], "text": r["text"]}) for r in rows))
    (tmp_path / "labels.tsv").write_text("\n".join(f"{r['image']}\t{r['text']}" for r in rows))
    for name in ("labels.jsonl", "labels.tsv"):
        assert [r["text"] for r in T.read_labels(tmp_path / name)] == LINES
    train, val = T.split_rows(rows, 0.34, seed=0)
    assert len(val) == 2 and len(train) == 4 and not {r["text"] for r in val} & {r["text"] for r in train}


def test_manifest_source_augments_shape_and_scan_deterministically(manifest):
    rows = T.read_labels(manifest)
    plain = T.ManifestSource(rows, seed=0, shuffle=False)
    shaped = T.ManifestSource(rows, seed=0, shuffle=False, warp=1.0, augment=0.5)
    for k in range(len(rows)):
        (a, ta), (b, tb), (c, _) = plain.get(k), shaped.get(k), shaped.get(k)
        assert ta == tb == rows[k]["text"] and np.array_equal(np.asarray(b), np.asarray(c))
    changed = [not np.array_equal(np.asarray(plain.get(k)[0].convert("L")), np.asarray(shaped.get(k)[0]))
               for k in range(len(rows))]
    assert sum(changed) >= 4
    args = T.build_parser().parse_args(["train", "--out", "x", "--train-manifest", str(manifest), "--warp", "0.7"])
    assert T.make_sources(args, (32, 128))[0].warp == 0.7


def test_labels_shift_and_pad(tmp_path):
    trainer = new_trainer(tmp_path)
    dec_in, labels = trainer.encode_texts(["ab", "abcd"])
    dec_in, labels = np.array(dec_in), np.array(labels)
    ids = trainer.text.encode("abcd")
    assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>
    assert labels.shape[1] % 8 == 0 and list(labels[1, :len(ids)]) == ids and (labels[1, len(ids):] == 1).all()
    assert dec_in[0, 0] == 2 and (dec_in[:, 1:] == labels[:, :-1]).all()


def test_training_lowers_loss_and_reads(trained, manifest):
    trainer, losses, _ = trained
    assert np.mean(losses[-5:]) < 0.25 * np.mean(losses[:5])
    images = [T.Image.open(r["image"]) for r in T.read_labels(manifest)]
    res = trainer.evaluate(images, LINES)
    assert res["cer"] < 0.3, res


def test_lr_schedule():
    assert T.lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert T.lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert T.lr_at(100, 1.0, 10, 100, final_fraction=0.0) == pytest.approx(0.0, abs=1e-9)
    assert T.lr_at(55, 1.0, 10, 100, final_fraction=0.0) == pytest.approx(0.5)


def test_accumulation_equals_big_batch(tmp_path, manifest):
    """Two micro-batches of 3 give the step of one batch of 6 (loss normalised over all tokens)."""
    a, b = new_trainer(tmp_path / "a"), new_trainer(tmp_path / "b", accum=2)
    pixels, texts = batches(manifest).batch(0)
    ra = a.train_step([(pixels, texts)])
    rb = b.train_step([(pixels[:3], texts[:3]), (pixels[3:], texts[3:])])
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    for k, v in a.master.items():
        np.testing.assert_allclose(np.array(v), np.array(b.master[k]), atol=1e-5)


def test_checkpoint_resume_is_exact(tmp_path, manifest):
    stream = batches(manifest, batch_size=4, augment=0.5)
    a = new_trainer(tmp_path / "a")
    for _ in range(3):
        a.train_step([stream.batch(a.step)])
    ckpt = a.save_checkpoint(tmp_path / "a" / "last")
    b = new_trainer(tmp_path / "b")
    b.load_checkpoint(ckpt)
    assert b.step == a.step == 3
    sa, sb = a.state_arrays(), b.state_arrays()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(np.array(sa[k]), np.array(sb[k])), k
    stream_b = batches(manifest, batch_size=4, augment=0.5)  # a fresh stream: same samples for step 3
    ra, rb = a.train_step([stream.batch(a.step)]), b.train_step([stream_b.batch(b.step)])
    assert ra["loss"] == rb["loss"] and ra["lr"] == rb["lr"]


def test_mlx_export_loads_with_processor(trained, manifest, tmp_path):
    from scripts.mlx_processor import load_mlx_processor

    trainer, _, out = trained
    trainer.save_model(out / "best")
    dst = T.export_mlx(out / "best", tmp_path / "mlx16", dtype="float16")
    stored = {}
    for f in dst.glob("*.safetensors"):
        stored.update(mx.load(str(f)))
    assert {v.dtype for v in stored.values()} == {mx.float16}
    proc = load_mlx_processor(dst, dtype="float16")  # by default a CPU run widens it to float32
    assert proc.model.dtype == mx.float16
    images = [T.Image.open(r["image"]) for r in T.read_labels(manifest)]
    full = T.export_mlx(out / "best", tmp_path / "mlx32", dtype="float32")
    assert load_mlx_processor(full).process_batch(images, show_progress=False) == \
        trainer.processor().process_batch(images, show_progress=False)
    assert len(proc.process_batch(images, show_progress=False)) == len(images)


def test_sharded_weights_load(trained, tmp_path):
    from scripts.mlx_models import load_model

    trainer, _, _ = trained
    T.save_sharded(tmp_path, "model", dict(trainer.master), max_bytes=50_000)
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 2
    for name in ("config.json",):
        (tmp_path / name).write_text(json.dumps(trainer.config.hf_config))
    model = load_model(tmp_path)
    from mlx.utils import tree_flatten

    for k, v in tree_flatten(model.parameters()):
        assert np.array_equal(np.array(v), np.array(trainer.master[k]))


def test_hf_export_round_trips(trained, manifest, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    trainer, _, out = trained
    trainer.save_model(out / "best")
    hf_dir = T.export_hf(out / "best", tmp_path / "hf")
    # the layout the installed transformers writes itself (its own save_pretrained of model and processor)
    ref_dir = tmp_path / "ref"
    transformers.VisionEncoderDecoderModel.from_pretrained(hf_dir).save_pretrained(ref_dir)
    transformers.TrOCRProcessor.from_pretrained(hf_dir).save_pretrained(ref_dir)
    assert sorted(p.name for p in hf_dir.iterdir()) == sorted(p.name for p in ref_dir.iterdir())
    model = transformers.VisionEncoderDecoderModel.from_pretrained(hf_dir).eval()
    processor = transformers.TrOCRProcessor.from_pretrained(hf_dir)
    images = [T.Image.open(r["image"]).convert("RGB") for r in T.read_labels(manifest)]
    pixel_values = processor(images=images, return_tensors="pt").pixel_values
    with torch.no_grad():
        ids = model.generate(pixel_values, max_length=trainer.max_target_length, num_beams=1, do_sample=False)
    hf_texts = processor.batch_decode(ids, skip_special_tokens=True)
    ours = trainer.processor().process_batch(images, show_progress=False)
    assert hf_texts == ours
    assert sum(a == b for a, b in zip(ours, LINES)) >= 3  # it has learned to read, so the test is not vacuous
    # and back: the export converts to an MLX model that reads the same
    from scripts.convert_trocr_to_mlx import convert
    from scripts.mlx_processor import load_mlx_processor

    back = load_mlx_processor(convert(hf_dir, tmp_path / "mlx", verbose=False))
    assert back.process_batch(images, show_progress=False) == ours


def test_train_command_checkpoints_stops_on_time_and_resumes(tmp_path, manifest):
    """The whole `train` loop with a rendering pool: checkpoint, history and plot written at the end,
    a time limit stops it with its state saved, --resume carries on to --steps."""
    out = tmp_path / "run"
    common = ["train", "--out", str(out), "--train-manifest", str(manifest), "--val-manifest", str(manifest),
              "--batch-size", "3", "--eval-every", "2", "--save-every", "100", "--workers", "2", "--lr", "1e-3",
              "--warmup", "1", "--warp", "0.5"]
    summary = T.train(T.build_parser().parse_args(common + ["--arch", "tiny", "--steps", "3", "--time-limit", "1e-9"]))
    assert summary["step"] == 1 and summary["stopped"] == "time limit"
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert state["step"] == 1 and [v["step"] for v in state["history"]["val"]] == [1]
    summary = T.train(T.build_parser().parse_args(common + ["--resume", str(out / "last"), "--steps", "3"]))
    assert summary["step"] == 3 and summary["stopped"] == "steps"
    history = json.loads((out / "history.json").read_text())
    assert [v["step"] for v in history["val"]] == [1, 2, 3] and [h["step"] for h in history["train"]] == [1, 2, 3]
    assert (out / "curves.png").stat().st_size > 0 and (out / "best" / "config.json").is_file()


def test_train_refuses_init_with_resume_and_says_what_to_drop(tmp_path, capsys):
    """Refused before anything loads (a GPU call is not spent on it), and the message names the fix."""
    rc = T.main(["train", "--out", str(tmp_path / "run"), "--synthetic", "--init", "models/mlx/default",
                 "--resume", str(tmp_path / "run" / "last")])
    assert rc == 1 and "drop --init models/mlx/default when resuming" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_plot_curves_with_every_validation_error_zero(tmp_path, recwarn):
    history = {"train": [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)],
               "val": [{"step": 2, "cer": 0.0, "wer": 0.0}, {"step": 3, "cer": 0.0, "wer": 0.0}]}
    T.plot_curves(history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert not [w for w in recwarn if "log-scaled" in str(w.message)]


def test_batch_stream_close_with_renders_in_flight(manifest):
    stream = T.BatchStream(T.ManifestSource(T.read_labels(manifest), seed=0), (32, 128), 3, workers=2, chunk=1)
    pixels, texts = stream.batch(0)  # queues several batches ahead
    assert pixels.shape[0] == 3 and len(stream.pending) > 0
    stream.close()
    assert stream.pool is None and not stream.pending


@pytest.mark.parametrize("option", ["--glyph-share", "--handwriting-share", "--oldstyle-share", "--glyph-shape-share"])
def test_share_options_refuse_numbers_outside_zero_one(option, capsys):
    with pytest.raises(SystemExit):
        T.build_parser().parse_args(["train", "--out", "x", "--synthetic", option, "1.5"])
    assert "a probability between 0 and 1, not 1.5" in capsys.readouterr().err
    args = T.build_parser().parse_args(["train", "--out", "x", "--synthetic", option, "0.5"])
    assert getattr(args, option[2:].replace("-", "_")) == 0.5


def logits_of(*models, manifest):
    """Each model's logits on the first training batch, for the same few decoder tokens."""
    pixels, _ = batches(manifest).batch(0)
    x = mx.broadcast_to(mx.array(pixels.astype(np.float32) / 127.5 - 1.0).reshape(*pixels.shape[:3], 1),
                        (*pixels.shape[:3], 3))
    tokens = mx.array([[models[0].config.decoder_start_token_id, 5, 6, 7]] * pixels.shape[0])
    return [np.array(m(x, tokens)) for m in models]


def test_grown_encoder_reads_as_before_then_learns_and_saves(trained, manifest, tmp_path):
    """--grow-encoder-layers: same logits as the --init model at step 0, new blocks get gradients (one step
    moves their zeroed output matrices), and the saved folder loads with the new depth."""
    from mlx.utils import tree_flatten

    from scripts.mlx_models import load_model

    trainer, _, _ = trained
    src = trainer.save_model(tmp_path / "small")
    args = T.build_parser().parse_args(["train", "--out", str(tmp_path / "run"), "--init", str(src),
                                        "--grow-encoder-layers", "5"])
    grown, processor_dir, _ = T.build_model(args)
    old = load_model(src)
    assert old.config.encoder.num_hidden_layers == 2 and grown.config.encoder.num_hidden_layers == 5
    before, after = logits_of(old, grown, manifest=manifest)
    assert np.abs(before).max() > 0.1 and np.allclose(before, after, atol=1e-5)
    # the old blocks sit at 0 and 2; 1, 3, 4 are new and start with zero output projections
    for i in (1, 3, 4):
        assert not np.any(np.array(grown.encoder.layers[i].fc2.weight))
    assert np.array_equal(np.array(grown.encoder.layers[2].fc2.weight), np.array(old.encoder.layers[1].fc2.weight))
    t = T.Trainer(grown, processor_dir, lr=1e-3, warmup=1, total_steps=10, label_smoothing=0.0, seed=0)
    t.train_step([batches(manifest).batch(0)])
    assert np.any(np.array(t.master["encoder.layers.3.fc2.weight"]))
    reloaded = load_model(t.save_model(tmp_path / "grown"))
    assert reloaded.config.encoder.num_hidden_layers == 5
    for (k, a), (_, b) in zip(tree_flatten(reloaded.parameters()), tree_flatten(t.model.parameters())):
        assert np.allclose(np.array(a), np.array(b)), k


def test_widened_feed_forward_reads_as_before_then_learns_and_saves(trained, manifest, tmp_path):
    """--grow-encoder-mlp / --grow-decoder-ffn: same logits at step 0 (the post-norm decoder included), the old
    units unchanged, the new ones with zero fc2 columns that one step moves, and the saved folder reloads wide."""
    from scripts.mlx_models import load_model

    trainer, _, _ = trained
    src = trainer.save_model(tmp_path / "small")
    old = load_model(src)
    enc, dec = old.config.encoder.intermediate_size, old.config.decoder.decoder_ffn_dim
    args = T.build_parser().parse_args(["train", "--out", str(tmp_path / "run"), "--init", str(src),
                                        "--grow-encoder-mlp", str(2 * enc), "--grow-decoder-ffn", str(3 * dec)])
    wide, processor_dir, _ = T.build_model(args)
    assert (wide.config.encoder.intermediate_size, wide.config.decoder.decoder_ffn_dim) == (2 * enc, 3 * dec)
    before, after = logits_of(old, wide, manifest=manifest)
    assert np.abs(before).max() > 0.1 and np.allclose(before, after, atol=1e-5)
    for part, width in (("encoder", enc), ("decoder", dec)):
        new_fc1, new_fc2 = getattr(wide, part).layers[0].fc1.weight, getattr(wide, part).layers[0].fc2.weight
        old_fc1, old_fc2 = getattr(old, part).layers[0].fc1.weight, getattr(old, part).layers[0].fc2.weight
        assert np.array_equal(np.array(new_fc1[:width]), np.array(old_fc1))
        assert np.array_equal(np.array(new_fc2[:, :width]), np.array(old_fc2))
        assert not np.any(np.array(new_fc2[:, width:])) and np.abs(np.array(new_fc1[width:])).max() > 0
    t = T.Trainer(wide, processor_dir, lr=1e-3, warmup=1, total_steps=10, label_smoothing=0.0, seed=0)
    t.train_step([batches(manifest).batch(0)])
    assert np.any(np.array(t.master["decoder.layers.0.fc2.weight"])[:, dec:])
    assert np.any(np.array(t.master["encoder.layers.1.fc2.weight"])[:, enc:])
    reloaded = load_model(t.save_model(tmp_path / "wide"))
    assert reloaded.config.encoder.intermediate_size == 2 * enc and reloaded.config.decoder.decoder_ffn_dim == 3 * dec
    with pytest.raises(ValueError, match=f"--grow-encoder-mlp {enc - 1}: .* already {enc} wide"):
        T.grow_mlp(old, encoder_mlp=enc - 1)


def test_grow_encoder_refuses_what_it_cannot_do(trained, tmp_path):
    trainer, _, _ = trained
    src = trainer.save_model(tmp_path / "small")
    with pytest.raises(ValueError, match="already has 2 encoder blocks"):
        T.build_model(T.build_parser().parse_args(["train", "--out", "x", "--init", str(src), "--grow-encoder-layers", "1"]))
    with pytest.raises(ValueError, match="give --init DIR"):
        T.build_model(T.build_parser().parse_args(["train", "--out", "x", "--arch", "tiny", "--grow-encoder-layers", "4"]))
    with pytest.raises(ValueError, match="give --init DIR"):
        T.build_model(T.build_parser().parse_args(["train", "--out", "x", "--arch", "tiny", "--grow-encoder-mlp", "512"]))


def test_runs_and_exports_keep_the_init_models_decoding_settings(trained, manifest, tmp_path):
    """A fine-tune of the bundled model (4 beams in its generation_config.json) used to come out greedy, and
    its calibration (made for one beam width) then no longer matched how it reads."""
    trainer, _, _ = trained
    init = trainer.save_model(tmp_path / "init")
    gen = json.loads((init / "generation_config.json").read_text())
    (init / "generation_config.json").write_text(json.dumps({**gen, "num_beams": 3, "length_penalty": 1.0}))
    out = tmp_path / "run"
    T.train(T.build_parser().parse_args(
        ["train", "--out", str(out), "--init", str(init), "--train-manifest", str(manifest), "--val-manifest",
         str(manifest), "--batch-size", "3", "--steps", "1", "--eval-every", "1", "--save-every", "1",
         "--workers", "0", "--max-target-length", "40"]))
    for folder in (out / "best", out / "last", T.export_mlx(out / "last", tmp_path / "shipped")):
        saved = json.loads((folder / "generation_config.json").read_text())
        assert saved["num_beams"] == 3 and saved["length_penalty"] == 1.0, folder
        assert saved["max_length"] == 40 and saved["decoder_start_token_id"] == gen["decoder_start_token_id"]
    assert "num_beams" not in json.loads((trainer.save_model(tmp_path / "plain") / "generation_config.json").read_text())


def test_average_gives_the_mean_of_each_weight_and_refuses_other_shapes(trained, tmp_path, capsys):
    from mlx.utils import tree_flatten

    from scripts.mlx_models import load_model

    trainer, _, out = trained
    trainer.save_model(out / "best")
    a = T.export_mlx(out / "best", tmp_path / "a", dtype="float32")
    fresh = new_trainer(tmp_path / "fresh")  # same architecture, other (random) weights
    fresh.save_model(tmp_path / "fresh" / "m")
    b = T.export_mlx(tmp_path / "fresh" / "m", tmp_path / "b", dtype="float32")
    soup = T.average_models([a, b], tmp_path / "soup", dtype="float32")
    wa, wb, ws = (dict(tree_flatten(load_model(p).parameters())) for p in (a, b, soup))
    assert ws.keys() == wa.keys()
    assert any(not np.allclose(np.array(wa[k]), np.array(wb[k])) for k in wa)
    for k in wa:
        np.testing.assert_allclose(np.array(ws[k]), (np.array(wa[k]) + np.array(wb[k])) / 2, rtol=1e-6, atol=1e-7)
    same = T.average_models([a, a], tmp_path / "same", dtype="float32")
    assert all(np.array_equal(np.array(v), np.array(wa[k])) for k, v in tree_flatten(load_model(same).parameters()))
    assert (soup / "processor").is_dir() and not (soup / "calibration.json").exists()
    other = T.build_parser().parse_args(["train", "--out", str(tmp_path / "wide"), "--arch", "tiny", "--decoder-ffn", "96"])
    model, processor_dir, _ = T.build_model(other)
    T.Trainer(model, processor_dir, lr=1e-3, warmup=1, total_steps=2, seed=0).save_model(tmp_path / "wide" / "m")
    assert T.main(["average", str(a), str(tmp_path / "wide" / "m"), "--out", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err
    assert "another architecture" in err and "decoder_ffn_dim" in err and str(tmp_path / "wide" / "m") in err
    assert T.main(["average", str(a), "--out", str(tmp_path / "one")]) == 1
    assert "two or more model folders" in capsys.readouterr().err
