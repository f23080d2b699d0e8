"""tks_kernels.data: built-in digits, CIFAR python batches, event files written here in
their real binary formats, integration into frames, the frame cache, and the errors."""

import pickle
import sys

import numpy as np
import pytest
import torch

import tks_kernels.data as data
from tks_kernels.data import events as ev
from tks_kernels.data import static


# ---------------------------------------------------------------- writers (real formats)

AEDAT_HEADER = (b"#!AER-DAT2.0\r\n"
                b"# This is a raw AE data file - do not edit\r\n"
                b"# Data format is int32 address, int32 timestamp (8 bytes total), "
                b"repeated for each event\r\n"
                b"# Timestamps tick is 1 us\r\n")


def write_aedat(path, x, y, t, p):
    """Encode events as CIFAR10-DVS stores them: rotated, polarity inverted."""
    raw_x, raw_y, raw_p = 127 - np.asarray(y), 127 - np.asarray(x), 1 - np.asarray(p)
    addr = (raw_y << 8) | (raw_x << 1) | raw_p
    body = np.stack([addr, np.asarray(t)], axis=1).astype(">u4").tobytes()
    path.write_bytes(AEDAT_HEADER + body)


def write_atis_bin(path, x, y, t, p):
    raw = bytearray()
    for xi, yi, ti, pi in zip(x, y, t, p):
        raw += bytes([xi, yi, (pi << 7) | ((ti >> 16) & 0x7F), (ti >> 8) & 0xFF, ti & 0xFF])
    path.write_bytes(bytes(raw))


def write_cifar(folder, files, label_key, per_file, num_classes, meta_name, names_key, seed=0):
    """Python batches as pickled dicts with bytes keys (what Python 2 wrote). Returns
    {file: (images uint8 [n, 3, 32, 32], labels)}."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for k, name in enumerate(files):
        images = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(per_file) * 7 + k * 3) % num_classes]
        batch = {b"batch_label": name.encode(), label_key.encode(): labels,
                 b"data": images.reshape(per_file, 3072),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(per_file)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = (images, labels)
    names = [f"class{i}".encode() for i in range(num_classes)]
    (folder / meta_name).write_bytes(pickle.dumps({names_key.encode(): names}, protocol=2))
    return written


# ---------------------------------------------------------------- info, create, errors

def test_info_covers_every_name():
    assert set(data.DATASETS) == {"digits", "digits_spikes", "cifar10", "cifar100", "imagenet",
                                  "cifar10_dvs", "ncaltech101", "events_npz"}
    assert data.info("cifar100").num_classes == 100
    assert data.info("cifar10").input_shape == (3, 32, 32)
    assert data.info("cifar10_dvs") == data.DatasetInfo("cifar10_dvs", 10, (2, 48, 48), True, 10)
    assert data.info("ncaltech101").num_classes == 101
    # digits_spikes: a sequence per sample (Bernoulli spike trains), handled as event data
    assert [n for n in data.DATASETS if data.info(n).is_event] == \
        ["digits_spikes", "cifar10_dvs", "ncaltech101", "events_npz"]


def test_unknown_name_lists_valid_ones():
    for call in (lambda: data.create("mnist"), lambda: data.info("mnist")):
        with pytest.raises(ValueError, match="unknown dataset 'mnist'") as e:
            call()
        for name in data.DATASETS:
            assert name in str(e.value)


@pytest.mark.parametrize("T", [0, -3, 2.5, True])
def test_bad_T_is_rejected(T, tmp_path):
    with pytest.raises(ValueError, match="T must be a positive integer"):
        data.create("digits", T=T)
    with pytest.raises(ValueError, match="T must be a positive integer"):
        data.create("cifar10_dvs", tmp_path, T=T)


def test_unknown_option_and_missing_root():
    with pytest.raises(TypeError, match="unknown options size.*test_fraction, split_seed"):
        data.create("digits", size=48)
    with pytest.raises(ValueError, match="needs root="):
        data.create("cifar10")
    assert "sensor_size" in data.options("events_npz")


# ---------------------------------------------------------------- digits

def test_digits_split_sizes_values_and_partition():
    from sklearn.datasets import load_digits

    train, test = data.create("digits"), data.create("digits", train=False)
    assert (len(train), len(test)) == (1438, 359)
    full = load_digits()
    # Per class, round(20%) of the samples go to the test set.
    expected_test = [int(np.floor(n * 0.2 + 0.5)) for n in np.bincount(full.target)]
    assert torch.bincount(test.targets, minlength=10).tolist() == expected_test
    x, y = train[5]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.shape == ()
    both = torch.cat([train.images, test.images]).reshape(1797, 64).numpy()
    assert both.min() == 0.0 and both.max() == 1.0
    # train + test is exactly the data set: the same multiset of (image, label) rows.
    labels = torch.cat([train.targets, test.targets]).numpy()
    rows = np.concatenate([both * 16, labels[:, None]], 1)
    ref = np.concatenate([full.data, full.target[:, None]], 1)
    for got, want in zip(np.unique(rows, axis=0, return_counts=True),
                         np.unique(ref, axis=0, return_counts=True)):
        assert np.array_equal(got, want)


def test_digits_is_deterministic_and_loads_in_batches():
    a, b = data.create("digits", train=False), data.create("digits", train=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    x, y = next(iter(torch.utils.data.DataLoader(a, batch_size=32)))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    other = data.create("digits", train=False, split_seed=1)
    assert not torch.equal(other.images, a.images)
    with pytest.raises(ValueError, match="augment=True is not supported"):
        data.create("digits", augment=True)


def test_stratified_split_is_pinned():
    labels = np.repeat([0, 1], 5)
    train, test = data.stratified_split(labels, 0.4, seed=0)
    # Pinned: the legacy RandomState stream is frozen, so this never changes
    # (class 0 shuffles to 2 0 3 4 1, class 1 to 5 6 8 7 9; 2 of each go to test).
    assert test.tolist() == [0, 2, 5, 6] and train.tolist() == [1, 3, 4, 7, 8, 9]
    train, test = data.stratified_split(labels, 0.4, seed=None)
    assert test.tolist() == [0, 1, 5, 6]


# ---------------------------------------------------------------- CIFAR

CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


@pytest.mark.parametrize("nested", [True, False])
def test_cifar10_reads_python_batches(tmp_path, nested):
    folder = tmp_path / "cifar-10-batches-py"
    written = write_cifar(folder, CIFAR10_TRAIN + ["test_batch"], "labels", 2, 10,
                          "batches.meta", "label_names")
    ds = data.create("cifar10", tmp_path if nested else folder)
    assert len(ds) == 10 and ds.classes[3] == "class3"
    # The published per-channel statistics of the CIFAR-10 training set.
    assert static.CIFAR10_MEAN == (0.4914, 0.4822, 0.4465)
    assert static.CIFAR10_STD == (0.2470, 0.2435, 0.2616)
    mean = torch.tensor(static.CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(static.CIFAR10_STD).view(3, 1, 1)
    images, labels = written["data_batch_3"]
    x, y = ds[4 + 1]  # second image of the third batch
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert int(y) == labels[1]
    torch.testing.assert_close(x, (torch.from_numpy(images[1]).float() / 255 - mean) / std)
    # The row layout: red plane then green then blue, each row-major.
    raw = images[1].reshape(3072)
    assert x[1, 2, 5] == pytest.approx((raw[1024 + 2 * 32 + 5] / 255 - mean[1].item()) / std[1].item())
    test = data.create("cifar10", tmp_path, train=False)
    assert len(test) == 2 and test.targets.tolist() == written["test_batch"][1]


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    written = write_cifar(folder, ["train", "test"], "fine_labels", 3, 100, "meta",
                          "fine_label_names", seed=1)
    ds = data.create("cifar100", tmp_path, train=False)
    images, labels = written["test"]
    assert ds.targets.tolist() == labels and ds.num_classes == 100
    mean = torch.tensor(static.CIFAR100_MEAN).view(3, 1, 1)
    std = torch.tensor(static.CIFAR100_STD).view(3, 1, 1)
    torch.testing.assert_close(ds[2][0], (torch.from_numpy(images[2]).float() / 255 - mean) / std)


def test_cifar_augment_crops_and_flips(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, ["test_batch"], "labels", 1, 10, "batches.meta", "label_names")
    ds = data.create("cifar10", folder, train=False)
    ds.images.zero_()
    ds.images[0, :, 10, 6] = 255  # one white pixel at row 10, column 6
    aug = data.create("cifar10", folder, train=False, augment=True)
    aug.images = ds.images
    std, mean = torch.tensor(static.CIFAR10_STD), torch.tensor(static.CIFAR10_MEAN)
    torch.manual_seed(0)
    flipped = set()
    for _ in range(60):
        x = aug[0][0] * std.view(3, 1, 1) + mean.view(3, 1, 1)  # back to [0, 1]
        rows, cols = torch.nonzero(x[0] > 0.5, as_tuple=True)
        assert len(rows) == 1  # one pixel, still inside the 32x32 crop (shift <= 4)
        r, c = int(rows[0]), int(cols[0])
        assert abs(r - 10) <= 4
        # Unflipped: column 6 + shift; flipped: column 31 - 6 + shift.
        assert abs(c - 6) <= 4 or abs(c - 25) <= 4
        flipped.add(abs(c - 25) <= 4)
        # Everything else is black, the zero padding included.
        assert torch.allclose(x.sum(), torch.tensor(3.0), atol=1e-4)
    assert flipped == {True, False}


def test_cifar_errors_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data.create("cifar10", tmp_path / "nowhere")
    msg = str(e.value)
    assert "data_batch_1..5 and test_batch" in msg and "cifar-10-batches-py" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg and "does not exist" in msg
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="missing in .*data_batch_2.*found: data_batch_1"):
        data.create("cifar10", tmp_path)
    folder = tmp_path / "c100"
    folder.mkdir()
    (folder / "test").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="CIFAR-100: .*test is not a python batch"):
        data.create("cifar100", folder, train=False)
    (folder / "test").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8),
                                                b"labels": [0]}))
    with pytest.raises(ValueError, match="b'fine_labels'.*found keys \\['data', 'labels'\\]"):
        data.create("cifar100", folder, train=False)


# ---------------------------------------------------------------- ImageNet

def test_imagenet_without_torchvision_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes the import fail
    with pytest.raises(ImportError, match="ImageNet: .*needs torchvision"):
        data.create("imagenet", tmp_path)


def test_imagenet_image_folder(tmp_path):
    pytest.importorskip("torchvision", reason="ImageNet reading needs torchvision, not installed")
    from PIL import Image

    for split in ("train", "val"):
        for k, cls in enumerate(("n01", "n02")):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (10, 12), (40 * k, 0, 0)).save(tmp_path / split / cls / "a.png")
    ds = data.create("imagenet", tmp_path, train=False, image_size=8)
    x, y = ds[1]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert int(y) == 1 and len(ds) == 2
    with pytest.raises(FileNotFoundError, match="expected class folders"):
        data.create("imagenet", tmp_path / "val")


# ---------------------------------------------------------------- event readers

def test_aedat_decodes_known_bytes(tmp_path):
    # Written by hand: address 0x030A is x'=5, y'=3, p'=0, so x=127-3, y=127-5, p=1;
    # address 0x7FFF is x'=127, y'=127, p'=1, so x=0, y=0, p=0.
    path = tmp_path / "a.aedat"
    path.write_bytes(AEDAT_HEADER + bytes.fromhex("0000030A 00000007 80007FFF 0001E240"))
    e = data.read_aedat(path)
    assert e.x.tolist() == [124, 0] and e.y.tolist() == [122, 0]
    assert e.p.tolist() == [1, 0] and e.t.tolist() == [7, 123456]


def test_aedat_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 128, 50), rng.integers(0, 128, 50)
    t, p = np.sort(rng.integers(0, 2**32, 50)), rng.integers(0, 2, 50)
    write_aedat(tmp_path / "s.aedat", x, y, t, p)
    e = data.read_aedat(tmp_path / "s.aedat")
    for got, want in zip(e, (x, y, t, p)):
        assert np.array_equal(got, want)


def test_atis_bin_decodes_known_bytes(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(bytes([3, 5, 0x81, 0x02, 0x03, 200, 170, 0x7F, 0xFF, 0xFF]))
    e = data.read_atis_bin(path)
    assert e.x.tolist() == [3, 200] and e.y.tolist() == [5, 170]
    assert e.p.tolist() == [1, 0] and e.t.tolist() == [0x010203, 2**23 - 1]
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 240, 40), rng.integers(0, 180, 40)
    t, p = np.sort(rng.integers(0, 2**23, 40)), rng.integers(0, 2, 40)
    write_atis_bin(tmp_path / "b.bin", x.tolist(), y.tolist(), t.tolist(), p.tolist())
    for got, want in zip(data.read_atis_bin(tmp_path / "b.bin"), (x, y, t, p)):
        assert np.array_equal(got, want)


def test_npz_reader(tmp_path):
    np.savez(tmp_path / "s.npz", x=np.array([1, 2], np.uint16), y=np.array([0, 3]),
             t=np.array([5.0, 9.0]), p=np.array([True, False]))
    e = data.read_events_npz(tmp_path / "s.npz")
    assert [a.tolist() for a in e] == [[1, 2], [0, 3], [5, 9], [1, 0]]


def test_malformed_event_files(tmp_path):
    (tmp_path / "a.aedat").write_bytes(AEDAT_HEADER + b"\x00" * 7)
    with pytest.raises(ValueError, match="a.aedat is not an AEDAT 2.0 file: .* 7 bytes"):
        data.read_aedat(tmp_path / "a.aedat")
    (tmp_path / "a.bin").write_bytes(b"\x00" * 6)
    with pytest.raises(ValueError, match="a.bin is not an ATIS .bin file: 6 bytes"):
        data.read_atis_bin(tmp_path / "a.bin")
    np.savez(tmp_path / "a.npz", x=np.zeros(2), y=np.zeros(2), t=np.zeros(2))
    with pytest.raises(ValueError, match="lacks the arrays p"):
        data.read_events_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros(2), y=np.zeros(3), t=np.zeros(2), p=np.zeros(2))
    with pytest.raises(ValueError, match="of one length"):
        data.read_events_npz(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="c.npz is not a .npz file"):
        data.read_events_npz(tmp_path / "c.npz")


# ---------------------------------------------------------------- integration

def test_integrate_by_count_by_hand():
    # 7 events, T=3: 7 // 3 = 2 per slice, the last slice takes the remaining 3.
    e = data.Events(x=np.array([0, 1, 1, 2, 0, 0, 2]), y=np.array([0, 0, 0, 1, 1, 1, 1]),
                    t=np.arange(7), p=np.array([1, 0, 0, 1, 1, 1, 0]))
    frames = data.integrate_by_count(e, 3, (2, 3))
    assert frames.shape == (3, 2, 2, 3) and frames.dtype == np.float32
    want = np.zeros((3, 2, 2, 3), np.float32)
    want[0, 1, 0, 0] = 1   # event 0: ON at (y=0, x=0)
    want[0, 0, 0, 1] = 1   # event 1: OFF at (0, 1)
    want[1, 0, 0, 1] = 1   # event 2: OFF at (0, 1)
    want[1, 1, 1, 2] = 1   # event 3: ON at (1, 2)
    want[2, 1, 1, 0] = 2   # events 4, 5: ON at (1, 0)
    want[2, 0, 1, 2] = 1   # event 6: OFF at (1, 2)
    assert np.array_equal(frames, want)
    assert frames.sum(axis=(1, 2, 3)).tolist() == [2, 2, 3]
    # Fewer events than frames: all in the last frame; polarity -1 counts as OFF.
    few = data.Events(x=np.array([1]), y=np.array([0]), t=np.array([0]), p=np.array([-1]))
    f = data.integrate_by_count(few, 4, (2, 3))
    assert f[:3].sum() == 0 and f[3, 0, 0, 1] == 1 and f.sum() == 1
    with pytest.raises(ValueError, match="outside the 2x3 .* x in \\[0, 2\\], y in \\[0, 2\\]"):
        data.integrate_by_count(e._replace(y=e.y * 2), 3, (2, 3))


def test_resize_frames():
    frames = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(2, 2, 1, 1)
    area = data.resize_frames(frames, (2, 2), "area")
    assert area[0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]  # means of 2x2 blocks
    const = torch.full((3, 2, 128, 128), 5.0)
    assert torch.allclose(data.resize_frames(const, (48, 48)), torch.full((3, 2, 48, 48), 5.0))
    with pytest.raises(ValueError, match="resize_mode must be one of"):
        data.resize_frames(frames, (2, 2), "nearest")


# ---------------------------------------------------------------- event data sets

def make_npz_tree(root, classes=("a", "b"), per_class=5, sensor=(4, 6), seed=0):
    rng = np.random.default_rng(seed)
    written = {}
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            n = int(rng.integers(5, 30))
            e = data.Events(x=rng.integers(0, sensor[1], n), y=rng.integers(0, sensor[0], n),
                            t=np.sort(rng.integers(0, 10**6, n)), p=rng.integers(0, 2, n))
            np.savez(root / c / f"s_{i}.npz", **e._asdict())
            written[(c, f"s_{i}")] = e
    return written


def test_events_npz_dataset_split_and_frames(tmp_path):
    written = make_npz_tree(tmp_path / "ev", per_class=12)
    kw = dict(sensor_size=(4, 6), size=None, progress=False, cache_dir=tmp_path / "cache")
    train = data.create("events_npz", tmp_path / "ev", T=3, **kw)
    test = data.create("events_npz", tmp_path / "ev", T=3, train=False, **kw)
    assert (len(train), len(test)) == (22, 2) and train.classes == ["a", "b"]
    assert set(train.files).isdisjoint(test.files) and len(set(train.files) | set(test.files)) == 24
    assert test.targets.tolist() == [0, 1]
    for ds in (train, test):
        for i in (0, len(ds) - 1):
            x, y = ds[i]
            f = ds.files[i]
            assert x.shape == (3, 2, 4, 6) and x.dtype == torch.float32 and y.dtype == torch.int64
            assert ds.classes[int(y)] == f.parent.name
            e = written[(f.parent.name, f.stem)]
            n = len(e.x)
            assert x.sum(dim=(1, 2, 3)).tolist() == [n // 3, n // 3, n - 2 * (n // 3)]
            assert x[:, 1].sum() == e.p.sum()  # ON events in channel 1
            assert np.array_equal(x.numpy(), data.integrate_by_count(e, 3, (4, 6)))
    # Same split on every call; split_seed=None puts the first files in natural order
    # (s_2 before s_10) in the test set.
    again = data.create("events_npz", tmp_path / "ev", T=3, train=False, **kw)
    assert again.files == test.files
    first = data.create("events_npz", tmp_path / "ev", T=3, train=False, split_seed=None,
                        test_fraction=0.25, **kw)
    assert [f.name for f in first.files] == ["s_0.npz", "s_1.npz", "s_2.npz"] * 2
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    assert batch[0].shape == (4, 3, 2, 4, 6) and batch[1].shape == (4,)


def test_event_cache_is_written_reused_and_keyed_by_T(tmp_path, capsys):
    make_npz_tree(tmp_path / "ev")
    kw = dict(sensor_size=(4, 6), size=(2, 3), resize_mode="area")
    ds = data.create("events_npz", tmp_path / "ev", T=2, **kw)
    assert "integrating events into T=2 frames" in capsys.readouterr().err
    # Default place: a folder next to the data, keyed by T, sensor, size and mode.
    assert ds.cache_folder == tmp_path / "ev_frames" / "events_npz_T2_4x6_to_2x3_area"
    cached = sorted(ds.cache_folder.rglob("*"))
    assert [p for p in cached if p.is_file()] == sorted(ds.cache_files)
    assert not [p for p in cached if p.suffix == ".tmp"]
    x, _ = ds[0]
    assert x.shape == (2, 2, 2, 3)
    full = data.integrate_by_count(data.read_events_npz(ds.files[0]), 2, (4, 6))
    assert np.allclose(x.numpy(), full.reshape(2, 2, 2, 2, 3, 2).mean(axis=(3, 5)))
    # Reused: a marked cache file comes back as is, and nothing is integrated again.
    np.savez(ds.cache_files[0], frames=np.full((2, 2, 2, 3), 7.0, np.float32))
    again = data.create("events_npz", tmp_path / "ev", T=2, **kw)
    assert capsys.readouterr().err == ""
    assert torch.equal(again[0][0], torch.full((2, 2, 2, 3), 7.0))
    # Another T gets its own cache, not the marked file.
    t3 = data.create("events_npz", tmp_path / "ev", T=3, progress=False, **kw)
    assert t3.cache_folder != ds.cache_folder and t3[0][0].shape == (3, 2, 2, 3)
    assert not torch.equal(t3[0][0][:2], again[0][0])


def test_event_augment_flips_and_rolls(tmp_path):
    make_npz_tree(tmp_path / "ev", per_class=2)
    kw = dict(sensor_size=(4, 6), size=(12, 12), resize_mode="area", progress=False)
    plain = data.create("events_npz", tmp_path / "ev", **kw)
    aug = data.create("events_npz", tmp_path / "ev", augment=True, **kw)
    x = plain[0][0]
    torch.manual_seed(0)
    seen, flips = set(), set()
    for _ in range(30):
        a = aug[0][0]
        # A permutation of the pixels, the same for every frame and channel.
        assert torch.equal(a.flatten().sort().values, x.flatten().sort().values)
        hits = [(f, dy, dx) for f in (False, True) for dy in range(-5, 6) for dx in range(-5, 6)
                if torch.equal(a, torch.roll(x.flip(-1) if f else x, (dy, dx), (-2, -1)))]
        assert hits
        seen.add(hits[0])
        flips.add(tuple(sorted({f for f, _, _ in hits})))
    assert len(seen) > 5
    assert flips == {(False,), (True,)}  # both plain and flipped draws, told apart


def test_cifar10_dvs_dataset(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "CIFAR10DVS"
    written = {}
    for c in ev.CIFAR10_DVS_CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(2):
            n = 40
            e = (rng.integers(0, 128, n), rng.integers(0, 128, n),
                 np.sort(rng.integers(0, 10**6, n)), rng.integers(0, 2, n))
            write_aedat(root / c / f"cifar10_{c}_{i}.aedat", *e)
            written[f"cifar10_{c}_{i}"] = e
    (root / "README.txt").write_text("not a class")
    ds = data.create("cifar10_dvs", root, T=4, size=None, test_fraction=0.5, progress=False)
    assert len(ds) == 10 and ds.classes == list(ev.CIFAR10_DVS_CLASSES)
    x, y = ds[3]
    assert x.shape == (4, 2, 128, 128) and ds.classes[int(y)] == "cat"
    xs, ys, _, ps = written[ds.files[3].stem]
    assert x.sum(dim=(1, 2, 3)).tolist() == [10, 10, 10, 10]
    assert x[:, 1].sum() == ps.sum()
    assert x[:, :, ys[0], xs[0]].sum() == ((xs == xs[0]) & (ys == ys[0])).sum()
    small = data.create("cifar10_dvs", root, T=4, progress=False)  # default 48x48
    assert small[3][0].shape == (4, 2, 48, 48)
    assert small.cache_folder.name == "cifar10_dvs_T4_128x128_to_48x48_bilinear"


def test_ncaltech101_dataset(tmp_path):
    root = tmp_path / "N-Caltech101" / "Caltech101"  # as Caltech101.zip extracts
    for c in ("accordion", "airplanes"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            write_atis_bin(root / c / f"image_{i + 1:04d}.bin",
                           [239, 0, 5], [179, 0, 7], [1, 2, 3], [1, 0, i % 2])
    ds = data.create("ncaltech101", root.parent, T=1, size=None, test_fraction=0,
                     progress=False)
    assert len(ds) == 6 and ds.classes == ["accordion", "airplanes"]
    x, y = ds[4]
    assert x.shape == (1, 2, 180, 240) and int(y) == 1
    assert x[0, 1, 179, 239] == 1 and x[0, 0, 0, 0] == 1 and x[0, 1, 7, 5] == 1  # i = 1
    assert x.sum() == 3


def test_event_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match="CIFAR10-DVS: expected class folders root/<class>/\\*\\.aedat .*does not exist"):
        data.create("cifar10_dvs", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="found no class folders, only: nothing"):
        data.create("cifar10_dvs", tmp_path / "empty")
    (tmp_path / "part" / "airplane").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="missing class folders: automobile, bird"):
        data.create("cifar10_dvs", tmp_path / "part")
    (tmp_path / "npz" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="class folder .*a holds no .npz files"):
        data.create("events_npz", tmp_path / "npz", sensor_size=(4, 4))
    with pytest.raises(ValueError, match="events_npz needs sensor_size=\\(H, W\\)"):
        data.create("events_npz", tmp_path / "npz")
    np.savez(tmp_path / "npz" / "a" / "s.npz", x=[9], y=[0], t=[0], p=[1])
    with pytest.raises(ValueError, match="outside the 4x4 .*check sensor_size"):
        data.create("events_npz", tmp_path / "npz", sensor_size=(4, 4), progress=False,
                    cache_dir=tmp_path / "cache")
    (tmp_path / "bad" / "b").mkdir(parents=True)
    (tmp_path / "bad" / "b" / "x.bin").write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="x.bin is not an ATIS .bin file"):
        data.create("ncaltech101", tmp_path / "bad", progress=False)
