"""Issue 13, "nothing silently wrong": one test (or more) per numbered item.

1 overwritten checkpoint bytes refused (also tests/test_checkpoint.py); 2 NaN weights in
training stop the run before they are saved, and a NaN checkpoint is not resumed; 3 the
frame cache rebuilds truncated, corrupted, mis-shaped and stale entries; 6 a full disk
(tests/test_checkpoint.py); 7 malformed checkpoints give one line; 8 crafted checkpoints
and CIFAR batches run no code; 9 nonsense arguments are refused, naming them; 10 Ctrl-C,
--device cuda without CUDA, event errors naming the file, no empty run folder.
"""
import hashlib
import io
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
import warnings

import numpy as np
import pytest
import torch

import tks_kernels.data as data
from tks_kernels import checkpoint as ck
from tks_kernels.data import events as ev
from tks_kernels.data import static

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _WritesAFile:
    """Unpickling this runs os.system: what a crafted file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------- 3: frame cache


def make_npz_tree(root, per_class=3, sensor=(4, 6), seed=0):
    rng = np.random.default_rng(seed)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            n = int(rng.integers(8, 30))
            np.savez(root / c / f"s_{i}.npz", x=rng.integers(0, sensor[1], n), y=rng.integers(0, sensor[0], n),
                     t=np.sort(rng.integers(0, 10**6, n)), p=rng.integers(0, 2, n))


KW = dict(sensor_size=(4, 6), size=None, progress=False)


def expected_frames(ds, i):
    return ev.integrate_by_count(ev.read_events_npz(ds.files[i]), ds.T, (4, 6))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_payload_byte(path):
    b = bytearray(path.read_bytes())
    b[len(b) // 2] ^= 0x10  # inside the frames (the zip records are at both ends)
    path.write_bytes(bytes(b))


def _wrong_shape(path):
    np.savez(path, frames=np.ones((3, 2, 4, 6), np.float32))  # T=3 in a T=4 cache


def _wrong_dtype(path):
    np.savez(path, frames=np.ones((4, 2, 4, 6), np.float64))


def _old_npy(path):
    np.save(path.with_suffix(".tmpnpy"), np.ones((4, 2, 4, 6), np.float32))  # an .npy under the .npz name
    os.replace(path.with_suffix(".tmpnpy.npy"), path)


def _empty(path):
    path.write_bytes(b"")


def _extra_array(path):
    np.savez(path, frames=np.ones((4, 2, 4, 6), np.float32), other=np.zeros(1))


@pytest.mark.parametrize("damage", [_truncate, _flip_payload_byte, _wrong_shape, _wrong_dtype, _old_npy, _empty,
                                    _extra_array])
def test_a_damaged_cache_entry_is_rebuilt_with_one_warning(tmp_path, damage):
    make_npz_tree(tmp_path / "ev")
    ds = data.create("events_npz", tmp_path / "ev", T=4, cache_dir=tmp_path / "cache", **KW)
    good = [ds.cache_files[i].read_bytes() for i in (0, 1)]
    for i in (0, 1):
        damage(ds.cache_files[i])
    again = data.create("events_npz", tmp_path / "ev", T=4, cache_dir=tmp_path / "cache", **KW)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(len(again)):
            x, _ = again[i]
            assert x.dtype == torch.float32 and np.array_equal(x.numpy(), expected_frames(again, i))
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1, msgs  # said once, though two entries were rebuilt
    assert str(again.cache_files[0]) in msgs[0] and "rebuilding it from" in msgs[0]
    assert [again.cache_files[i].read_bytes() for i in (0, 1)] == good
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_a_replaced_source_file_is_integrated_again(tmp_path):
    make_npz_tree(tmp_path / "ev")
    ds = data.create("events_npz", tmp_path / "ev", T=2, cache_dir=tmp_path / "cache", **KW)
    old_entry = ds.cache_files[0]
    before = ds[0][0]
    # Replace the source with other events (a different size, and a later mtime).
    np.savez(ds.files[0], x=np.array([0, 5, 5]), y=np.array([0, 3, 3]), t=np.array([1, 2, 3]), p=np.array([1, 1, 0]))
    os.utime(ds.files[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.warns(UserWarning, match="1 cached frame files .* are out of date"):
        again = data.create("events_npz", tmp_path / "ev", T=2, cache_dir=tmp_path / "cache", **KW)
    x = again[0][0]
    assert not torch.equal(x, before)
    assert np.array_equal(x.numpy(), expected_frames(again, 0))
    assert again.cache_files[0] != old_entry and not old_entry.exists()  # the stale entry is gone
    # The same size and content but a new mtime also counts as changed.
    os.utime(again.files[0], ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    with pytest.warns(UserWarning, match="out of date"):
        data.create("events_npz", tmp_path / "ev", T=2, cache_dir=tmp_path / "cache", **KW)


def test_an_old_format_cache_is_replaced(tmp_path):
    make_npz_tree(tmp_path / "ev")
    ds = data.create("events_npz", tmp_path / "ev", T=2, cache_dir=tmp_path / "cache", **KW)
    for f, c in zip(ds.files, ds.cache_files):  # what the earlier version wrote: <stem>.npy
        np.save(c.parent / (f.stem + ".npy"), np.full((2, 2, 4, 6), 7.0, np.float32))
        c.unlink()
    with pytest.warns(UserWarning, match="older format"):
        again = data.create("events_npz", tmp_path / "ev", T=2, cache_dir=tmp_path / "cache", **KW)
    assert np.array_equal(again[0][0].numpy(), expected_frames(again, 0))
    assert not list((tmp_path / "cache").rglob("*.npy"))


# ----------------------------------------------------------------------------- 8, 9: CIFAR batches


def _cifar_batch(labels, data_=None):
    n = len(labels)
    return {b"batch_label": b"x", b"labels": labels,
            b"data": np.zeros((n, 3072), np.uint8) if data_ is None else data_, b"filenames": [b"a"] * n}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(tmp_path, protocol):
    images = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    (tmp_path / "b").write_bytes(pickle.dumps(_cifar_batch([1, 2, 9], images), protocol=protocol))
    x, y = static.read_cifar_batch(tmp_path / "b", "labels", 10)
    assert np.array_equal(x.reshape(3, 3072), images) and y.tolist() == [1, 2, 9] and y.dtype == np.int64
    (tmp_path / "c").write_bytes(pickle.dumps(_cifar_batch(list(np.array([4, 5], np.int64))), protocol=protocol))
    assert static.read_cifar_batch(tmp_path / "c", "labels", 10)[1].tolist() == [4, 5]


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_crafted_cifar_batch_runs_no_code(tmp_path, protocol):
    marker = tmp_path / f"ran-{uuid.uuid4().hex}"
    for where in ("data", "labels", "key"):
        batch = _cifar_batch([1])
        if where == "key":
            batch[_WritesAFile(marker)] = 1
        else:
            batch[where.encode()] = _WritesAFile(marker)
        (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
        with pytest.raises(ValueError, match="data_batch_1 is not a python batch.*refers to posix.system"):
            static.read_cifar_batch(tmp_path / "data_batch_1", "labels", 10)
        assert not marker.exists()
    pickle.loads(pickle.dumps(_WritesAFile(marker)))  # the plain unpickler does run it
    assert marker.exists()


def test_a_crafted_cifar_meta_file_runs_no_code(tmp_path):
    marker = tmp_path / f"ran-{uuid.uuid4().hex}"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(_cifar_batch([1, 2]), protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": _WritesAFile(marker)}, protocol=2))
    with pytest.raises(ValueError, match="batches.meta is not a pickled dict.*posix.system"):
        data.create("cifar10", tmp_path, train=False)
    assert not marker.exists()


@pytest.mark.parametrize("labels", [[1.0, 2.0], [1.7, 2.0], [True, False], np.array([1.5, 2.5])])
def test_float_cifar_labels_are_refused_not_truncated(tmp_path, labels):
    (tmp_path / "b").write_bytes(pickle.dumps(_cifar_batch(labels), protocol=2))
    with pytest.raises(ValueError, match="b is not a python batch.*b'labels' are (float64|bool).*not integers"):
        static.read_cifar_batch(tmp_path / "b", "labels", 10)


# ----------------------------------------------------------------------------- 9, 10: event files


def _aedat_tree(root, body_of):
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
    for c in ev.CIFAR10_DVS_CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(2):
            addr = np.array([(5 << 8) | (7 << 1) | 1, (9 << 8) | (3 << 1)], dtype=np.int64)
            body = np.stack([addr, np.array([1, 2])], axis=1).astype(">u4").tobytes()
            (root / c / f"cifar10_{c}_{i}.aedat").write_bytes(header + body)
    bad = root / "cat" / "cifar10_cat_1.aedat"
    bad.write_bytes(body_of(header))
    return bad


@pytest.mark.parametrize("body_of, match", [
    (lambda h: np.zeros(4, ">u4").tobytes(), "not an AEDAT 2.0 file: it does not start with the '#!AER-DAT2.0'"),
    (lambda h: b"", r"not an AEDAT 2.0 file: .*\(the file is empty\)"),
    (lambda h: h, "holds no events"),
])
def test_aedat_without_header_or_events_is_an_error_naming_the_file(tmp_path, body_of, match):
    bad = _aedat_tree(tmp_path / "dvs", body_of)
    with pytest.raises(ValueError, match=match) as e:
        data.create("cifar10_dvs", tmp_path / "dvs", T=2, size=None, test_fraction=0, progress=False,
                    cache_dir=tmp_path / "cache")
    assert str(bad) in str(e.value)


@pytest.mark.parametrize("kind", ["empty_bin", "empty_npz", "outside"])
def test_event_errors_name_the_file(tmp_path, kind):
    if kind == "empty_bin":
        (tmp_path / "nc" / "a").mkdir(parents=True)
        bad = tmp_path / "nc" / "a" / "image_0001.bin"
        bad.write_bytes(b"")
        name, root, kw, match = "ncaltech101", tmp_path / "nc", {}, "holds no events"
    else:
        make_npz_tree(tmp_path / "ev")
        bad = tmp_path / "ev" / "b" / "s_1.npz"
        if kind == "empty_npz":
            np.savez(bad, x=np.zeros(0, int), y=np.zeros(0, int), t=np.zeros(0, int), p=np.zeros(0, int))
            match = "holds no events"
        else:
            np.savez(bad, x=np.array([99]), y=np.array([0]), t=np.array([0]), p=np.array([1]))
            match = "events lie outside the 4x6"
        name, root, kw = "events_npz", tmp_path / "ev", KW
    with pytest.raises(ValueError, match=match) as e:
        data.create(name, root, T=2, test_fraction=0, cache_dir=tmp_path / "cache",
                    **{"progress": False, **kw})
    assert str(bad) in str(e.value)


# ----------------------------------------------------------------------------- NumPy scalars (9)


def test_numpy_scalars_are_accepted_where_python_numbers_are(tmp_path):
    from tks_kernels.ops import tks

    cfg = tks.make_config(np.float32(0.5), np.float64(3.0), label_smoothing=np.float32(0.0))
    assert cfg.lam == 0.5 and cfg.temperature == 3.0 and type(cfg.lam) is float
    make_npz_tree(tmp_path / "ev")
    ds = data.create("events_npz", tmp_path / "ev", T=np.int64(2), sensor_size=(4, 6), size=np.int64(2),
                     progress=False, cache_dir=tmp_path / "cache")
    assert ds[0][0].shape == (2, 2, 2, 2)
    with pytest.raises(ValueError, match="T must be a positive integer"):
        data.create("events_npz", tmp_path / "ev", T=np.float32(2.0), sensor_size=(4, 6))
    with pytest.raises(TypeError, match="lam must be a real number"):
        tks.make_config(np.bool_(True))


def test_numpy_scalars_in_the_losses_neurons_and_surrogates():
    from tks_kernels import LIF, surrogate
    from tks_kernels.loss import TETLoss, TKSLoss

    loss = TKSLoss(alpha=np.float32(0.5), temperature=np.float64(2.0), epochs=np.int64(10), backend="torch")
    assert loss.lam(np.int64(5)) == pytest.approx(0.25) and loss.epochs == 10 and type(loss.epochs) is int
    logits, y = torch.randn(3, 4, 5), torch.randint(0, 5, (4,))
    assert torch.equal(loss(logits, y, epoch=np.float32(5.0)), loss(logits, y, epoch=5))
    assert TETLoss(lamb=np.float32(0.5), means=np.float64(1.0)).lamb == 0.5
    lif = LIF(tau=np.float32(2.0), v_threshold=np.float64(0.5), step_mode="m", backend="torch")
    ref = LIF(tau=2.0, v_threshold=0.5, step_mode="m", backend="torch")
    x = torch.randn(4, 3, 5)
    assert torch.equal(lif(x), ref(x))
    assert surrogate.Sigmoid(alpha=np.float32(4.0)).alpha == 4.0


def test_numpy_integers_as_the_models_time_steps():
    from tks_kernels import models

    torch.manual_seed(0)
    a = models.create("mlp", num_classes=3, in_channels=1, T=np.int64(2), input_size=np.int64(4), backend="torch")
    torch.manual_seed(0)
    b = models.create("mlp", num_classes=3, in_channels=1, T=2, input_size=4, backend="torch")
    x = torch.rand(5, 1, 4, 4)
    assert a.T == 2 and type(a.T) is int
    assert torch.equal(a(x, T=np.int64(3)), b(x, T=3))
    with pytest.raises(ValueError, match="T must be a positive int"):
        a(x, T=np.float32(3.0))


@pytest.mark.parametrize("epoch", [float("nan"), float("inf"), -1, np.float32("nan"), "3", True])
def test_nonsense_epochs_are_refused(epoch):
    from tks_kernels.loss import TKSLoss

    loss = TKSLoss(epochs=10, backend="torch")
    with pytest.raises(ValueError, match="epoch must be a number >= 0, got"):
        loss(torch.randn(2, 3, 4), torch.tensor([0, 1, 2]), epoch=epoch)


# ----------------------------------------------------------------------------- training (1, 2, 7, 8, 9, 10)

# --data digits: one run in --out (the no-argument default is the multi-seed CE-vs-TKS demo).
TINY = ["--data", "digits", "--model", "mlp", "--width", "0.25", "-T", "2", "--epochs", "3", "--batch-size", "32",
        "--limit-train", "64", "--limit-test", "32", "--no-progress", "--seed", "1", "--backend", "torch"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run stopped after 2 of 3 epochs: checkpoint.pt (epoch 2) and checkpoint.prev.pt (epoch 1)."""
    from tks_kernels import train

    out = tmp_path_factory.mktemp("run") / "part"
    train.run(TINY + ["--out", str(out), "--stop-after", "2"])
    return out


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst / "checkpoint.pt"


def test_resuming_a_checkpoint_with_overwritten_bytes_is_refused(trained, tmp_path):
    from tks_kernels import train

    path = _copy_run(trained, tmp_path / "r")
    body_start = path.read_bytes().index(b"\n") + 1
    good = path.read_bytes()
    # Overwrite 64 bytes in the middle of the tensor data, as a bad disk or copy would.
    pos = body_start + (len(good) - body_start) // 2
    path.write_bytes(good[:pos] + bytes(64) + good[pos + 64:])
    with pytest.raises(SystemExit) as e:
        train.run(["--resume", str(path), "--no-progress"])
    msg = str(e.value)
    assert "\n" not in msg and f"{path}: the checkpoint is corrupted" in msg
    prev = path.parent / "checkpoint.prev.pt"
    assert f"the previous checkpoint {prev} is intact" in msg
    assert not (path.parent / "metrics.json").exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "keyless", "plain_torch"])
def test_malformed_checkpoints_give_one_line_on_resume(trained, tmp_path, kind):
    from tks_kernels import train

    path = _copy_run(trained, tmp_path / "r")
    good = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) - 1000])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(good)))
    elif kind == "keyless":
        ck.save(path, {"model": ck.load(path)["model"]}, keep_previous=False)
    else:
        torch.save(ck.load(path), path)
    with pytest.raises(SystemExit) as e:
        train.run(["--resume", str(path), "--no-progress"])
    msg = str(e.value)
    assert msg.startswith(f"tks-train: --resume: {path}: ") and "\n" not in msg
    if kind == "keyless":
        assert "lacks 'optimizer', 'scheduler', 'epoch', 'rng', 'args', 'loss', 'history'" in msg


def test_a_crafted_checkpoint_runs_no_code_on_resume(trained, tmp_path):
    from tks_kernels import train

    marker = tmp_path / f"ran-{uuid.uuid4().hex}"
    path = _copy_run(trained, tmp_path / "r")
    state = ck.load(path)
    state["args"] = _WritesAFile(marker)
    buf = io.BytesIO()
    torch.save(state, buf)
    body = buf.getvalue()
    for data_ in (body, b"TKS-CHECKPOINT 1 sha256=%s size=%d\n" % (hashlib.sha256(body).hexdigest().encode(),
                                                                  len(body)) + body):
        path.write_bytes(data_)
        with pytest.raises(SystemExit, match="tks-train: --resume: .*checkpoint.pt: "):
            train.run(["--resume", str(path), "--no-progress"])
        assert not marker.exists()


def test_resuming_from_nan_weights_stops_with_a_clear_error(trained, tmp_path):
    from tks_kernels import train

    path = _copy_run(trained, tmp_path / "r")
    state = ck.load(path)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name].view(-1)[3] = float("nan")
    ck.save(path, state, check_finite=False, keep_previous=False)
    with pytest.raises(SystemExit) as e:
        train.run(["--resume", str(path), "--no-progress"])
    assert f"the checkpoint holds non-finite values: model.{name} holds 1 NaN" in str(e.value)


def test_nan_weights_during_training_stop_before_they_are_saved(tmp_path, monkeypatch):
    """A NaN weight feeding a LIF layer gives "no spike", so the loss stays finite: the
    run must still stop, naming the tensor and the epoch, and save nothing of it."""
    from tks_kernels import train
    from tks_kernels.train.guards import TrainingStopped

    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step(self, *a, **k):
        out = real_step(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 4:  # the 2nd step of epoch 2 (2 steps an epoch)
            with torch.no_grad():
                self.param_groups[-1]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    out = tmp_path / "nan"
    with pytest.raises(TrainingStopped, match=r"non-finite values in epoch 2 of the tks run: .* is NaN or infinite; "
                                              r"stopped before saving this epoch") as e:
        train.run(TINY + ["--out", str(out)])
    saved = ck.load(out / "checkpoint.pt")  # epoch 1's, finite (load checks)
    assert saved["epoch"] == 1
    name = str(e.value).split(": ", 1)[1]
    assert "model." in name


def test_the_watch_names_the_first_non_finite_gradient_and_its_step():
    from tks_kernels.train.guards import NonFiniteWatch, TrainingStopped

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    watch = NonFiniteWatch(model)
    watch.start_epoch()
    for step in range(4):
        model(torch.randn(5, 3)).sum().backward()
        if step == 2:
            model[1].weight.grad[0, 1] = float("inf")
        watch.after_backward()
        model.zero_grad()
    with pytest.raises(TrainingStopped, match=r"epoch 7 of the ce run: the gradient of 1.weight became NaN or "
                                              r"infinite first at step 3"):
        watch.check(7, "ce", model, opt)
    watch.start_epoch()  # a clean epoch passes
    model(torch.randn(5, 3)).sum().backward()
    watch.after_backward()
    watch.check(8, "ce", model, opt)


@pytest.mark.parametrize("argv, match", [
    (["--label-smoothing", "-1"], "--label-smoothing must be in \\[0.0, 1.0\\), got -1.0"),
    (["--label-smoothing", "nan"], "--label-smoothing must be a finite number, got nan"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be >= 0.0, got -1.0"),
    (["--eval-every", "-1"], "--eval-every must be >= 0, got -1"),
    (["--limit-train", "0"], "--limit-train must be >= 1, got 0"),
    (["--limit-test", "0"], "--limit-test must be >= 1, got 0"),
    (["--stop-after", "0"], "--stop-after must be >= 1, got 0"),
    (["--temperature", "0"], "--temperature must be > 0.0, got 0.0"),
    (["--alpha", "1.5"], "--alpha must be in \\[0.0, 1.0\\], got 1.5"),
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--lr", "-0.1"], "--lr must be > 0.0, got -0.1"),
    (["--weight-decay", "-1"], "--weight-decay must be >= 0.0"),
    (["--width", "0"], "--width must be > 0.0, got 0.0"),
    (["--seed", "-3"], "--seed must be in \\[0, "),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["-T", "0"], "-T must be >= 1, got 0"),
])
def test_nonsense_arguments_are_refused_naming_them(tmp_path, monkeypatch, argv, match):
    from tks_kernels import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=match):
        train.run(TINY + argv)
    assert os.listdir(tmp_path) == []  # nothing written, no runs/<time>/


def test_stop_after_an_epoch_the_checkpoint_already_passed_is_refused(trained, tmp_path):
    from tks_kernels import train

    path = _copy_run(trained, tmp_path / "r")
    with pytest.raises(SystemExit, match=f"--stop-after 1: {path} is already at epoch 2"):
        train.run(["--resume", str(path), "--stop-after", "1", "--no-progress"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path, monkeypatch):
    from tks_kernels import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="--device cuda: CUDA is not available .*; use --device cpu"):
        train.run(TINY + ["--device", "cuda"])
    with pytest.raises(SystemExit, match="--device 'gpu0' is not a device name"):
        train.run(TINY + ["--device", "gpu0"])
    assert os.listdir(tmp_path) == []


def test_a_failed_run_leaves_no_empty_run_folder(tmp_path, monkeypatch):
    from tks_kernels import train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="CIFAR-10: expected"):
        train.run(["--data", "cifar10", "--data-root", str(tmp_path / "nothing"), "--no-progress"])
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs").mkdir()  # a folder that was there before stays
    with pytest.raises(FileNotFoundError):
        train.run(["--data", "cifar10", "--data-root", str(tmp_path / "nothing"), "--no-progress"])
    assert os.listdir(tmp_path / "runs") == []


def test_main_prints_one_line_for_a_stopped_run(tmp_path, monkeypatch, capsys):
    from tks_kernels import train

    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        out = real_step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[-1]["params"][0].view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    assert train.main(TINY + ["--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tks-train: non-finite values in epoch 1 of the tks run") and "\n" not in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # it had nothing in it: removed


def _train_cmd(*argv):
    return [sys.executable, "-m", "tks_kernels.train", *argv]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_sigint_exits_with_a_short_message_and_a_resumable_checkpoint(tmp_path, sig):
    """Ctrl-C during epoch k: exit status 130, one line naming the checkpoint, no
    traceback; --resume from it gives the weights of an uninterrupted run. kill -9 (at
    any moment, maybe mid-write) leaves a checkpoint that loads and resumes the same."""
    from tks_kernels import train

    argv = TINY[:]
    argv[argv.index("--epochs") + 1] = "400"  # long enough to be interrupted
    out = tmp_path / "int"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # SIGINT back to its default in the child, as in a terminal: a shell without job control
    # starts background jobs (CI's, `cmd &`) with SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler, so the Ctrl-C this test sends would be lost
    proc = subprocess.Popen(_train_cmd(*argv, "--out", str(out)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        if sig == signal.SIGKILL:
            time.sleep(0.3)  # a few epochs on: the kill lands anywhere, a save included
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = stderr.decode()
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        line = [ln for ln in err.splitlines() if "interrupted" in ln]
        assert len(line) == 1 and f"continue with --resume {out / 'checkpoint.pt'}" in line[0], err
        assert not list(out.glob(".*.tmp"))
    else:
        assert proc.returncode == -signal.SIGKILL, err
    saved = ck.load(out / "checkpoint.pt")
    k = saved["epoch"] + 1
    # Resume for one more epoch; an uninterrupted run stopped at the same epoch matches it.
    resumed = train.run(["--resume", str(out), "--stop-after", str(k), "--no-progress"])
    full = train.run(argv + ["--out", str(tmp_path / "full"), "--stop-after", str(k)])
    assert resumed.stopped and full.stopped
    a, b = ck.load(out / "checkpoint.pt")["model"], ck.load(tmp_path / "full" / "checkpoint.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.gpu
def test_the_watch_does_not_sync_the_gpu_per_step():
    """The per-step gradient check only queues device work: under CUDA's sync debug mode
    "error", a step that waited for the GPU would raise."""
    from tks_kernels.train.guards import NonFiniteWatch, TrainingStopped

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    watch = NonFiniteWatch(model)
    watch.start_epoch()
    for step in range(5):
        x = torch.randn(8, 64, device="cuda")
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        if step == 3:
            model[2].bias.grad[1] = float("nan")
        if step:  # the first call builds its index tensor from a list (a host-to-device copy)
            torch.cuda.set_sync_debug_mode("error")
        try:
            watch.after_backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    with pytest.raises(TrainingStopped, match="the gradient of 2.bias became NaN or infinite first at step 4"):
        watch.check(1, "tks", model, opt)
