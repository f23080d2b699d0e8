"""The TKS authors' recipe, point by point: equal-time event bins, the ordered DVS split,
their DVS augmentation and resize, strict firing on exact ties on every backend."""
import math

import numpy as np
import pytest
import torch

import tks_kernels
from tks_kernels.data import events as ev
from tks_kernels.data.splits import ordered_split

BACKENDS = [name for name, (ok, _) in tks_kernels.available_backends().items() if ok]


def test_equal_time_bins_on_a_hand_made_event_file():
    # 2x3 sensor, times 0..100: w = (100 - 0) // 4 = 25, bins [0,25) [25,50) [50,75) [75,100)
    e = ev.Events(x=np.array([0, 1, 2, 0, 1, 2, 0, 1]), y=np.array([0, 0, 1, 1, 0, 0, 1, 1]),
                  t=np.array([0, 10, 24, 25, 60, 74, 99, 100]), p=np.array([1, 0, 1, 1, 0, 0, 1, 1]))
    f = ev.integrate_by_time(e, 4, (2, 3))
    assert f.shape == (4, 2, 2, 3) and f.dtype == np.float32
    want = np.zeros((4, 2, 2, 3), np.float32)
    for j, (x, y, p) in [(0, (0, 0, 1)), (0, (1, 0, 0)), (0, (2, 1, 1)), (1, (0, 1, 1)),
                         (2, (1, 0, 0)), (2, (2, 0, 0)), (3, (0, 1, 1))]:
        want[j, p, y, x] += 1
    assert np.array_equal(f, want)
    # tonic's SliceByTimeBins drops the events at or after t0 + T*w: here the one at t=100
    assert f.sum() == 7
    # equal event counts instead: 2 per slice
    assert ev.integrate_by_count(e, 4, (2, 3)).sum(axis=(1, 2, 3)).tolist() == [2, 2, 2, 2]
    # integer window: (103 - 3) // 3 = 33 -> bins [3, 36) [36, 69) [69, 102); 102 and 103 dropped
    g = ev.integrate_by_time(e._replace(t=np.array([3, 35, 36, 68, 69, 101, 102, 103])), 3, (2, 3))
    assert g.sum(axis=(1, 2, 3)).tolist() == [2, 2, 2]
    # shorter than T time units: w = 0, empty frames (as tonic)
    assert ev.integrate_by_time(e._replace(t=np.array([5, 5, 5, 6, 6, 6, 7, 7])), 4, (2, 3)).sum() == 0
    with pytest.raises(ValueError, match="outside the 2x3"):
        ev.integrate_by_time(e._replace(x=e.x + 5), 4, (2, 3))


def test_dvs_split_is_the_first_90_percent_per_class_in_file_order():
    labels = np.repeat([0, 1, 2], [10, 20, 7])
    train, test = ordered_split(labels, 0.1)
    assert test.tolist() == [9] + list(range(28, 30)) + [36]
    assert train.tolist() == list(range(0, 9)) + list(range(10, 28)) + list(range(30, 36))
    # BrainCog: range(i*n, round(i*n + n*0.9)) train, the rest test, per class of n = 1000
    labels = np.repeat(np.arange(10), 1000)
    train, test = ordered_split(labels, 0.1)
    want_train = [k for i in range(10) for k in range(i * 1000, round(i * 1000 + 1000 * 0.9))]
    assert train.tolist() == want_train and len(test) == 1000
    assert set(test.tolist()) == set(range(10000)) - set(want_train)


def test_dvs_dataset_uses_the_ordered_split_time_bins_and_align_corners(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "ev"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            n = 50
            e = ev.Events(x=rng.integers(0, 6, n), y=rng.integers(0, 4, n), t=np.sort(rng.integers(0, 1000, n)),
                          p=rng.integers(0, 2, n))
            np.savez(root / c / f"s_{i}.npz", **e._asdict())
    kw = dict(sensor_size=(4, 6), size=(8, 8), progress=False, frames_by="time", resize_mode="align_corners",
              split="ordered", test_fraction=0.1, cache_dir=tmp_path / "cache")
    train = tks_kernels.data.create("events_npz", root, T=3, **kw)
    test = tks_kernels.data.create("events_npz", root, T=3, train=False, **kw)
    # natural order: s_0..s_8 train, s_9 test, per class
    assert [f.name for f in test.files] == ["s_9.npz", "s_9.npz"]
    assert [f.name for f in train.files][:9] == [f"s_{i}.npz" for i in range(9)]
    assert train.cache_folder.name.endswith("_align_corners_timebins")
    x, _ = test[0]
    frames = torch.from_numpy(ev.integrate_by_time(ev.read_events_npz(test.files[0]), 3, (4, 6)))
    want = torch.nn.functional.interpolate(frames, size=(8, 8), mode="bilinear", align_corners=True)
    torch.testing.assert_close(x, want)
    with pytest.raises(ValueError, match="frames_by must be one of"):
        tks_kernels.data.create("events_npz", root, **{**kw, "frames_by": "space"})


def test_dvs_augmentation_crops_flips_and_rotates_all_frames_alike():
    x = torch.rand(3, 2, 12, 12)
    torch.manual_seed(0)
    outs = [ev.random_crop_flip_rotate(x) for _ in range(20)]
    assert all(o.shape == x.shape for o in outs)
    assert len({o.sum().item() for o in outs}) > 10
    # rotation: nearest neighbour about the centre, torchvision's tensor path
    assert torch.equal(ev.rotate_nearest(x, 0.0), x)
    assert torch.equal(ev.rotate_nearest(x, 90.0), torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(ev.rotate_nearest(x, -90.0), torch.rot90(x, -1, dims=(-2, -1)))
    # the same crop, flip and angle for every frame and channel: frame differences commute
    torch.manual_seed(1)
    a = ev.random_crop_flip_rotate(x)
    torch.manual_seed(1)
    b = ev.random_crop_flip_rotate(x[:1].expand(3, 2, 12, 12))
    assert torch.equal(a[0], b[1])


def test_dvs_augmentation_equals_torchvision():
    try:
        from torchvision import transforms
    except Exception as e:  # not installed, or built for another torch (as beside torch 2.13 here)
        pytest.skip(f"torchvision does not import: {type(e).__name__}: {e}")
    tv = transforms.Compose([transforms.RandomCrop(48, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.RandomRotation(15)])
    x = torch.rand(4, 2, 48, 48)
    for seed in range(10):
        torch.manual_seed(seed)
        want = tv(x)
        torch.manual_seed(seed)
        assert torch.equal(ev.random_crop_flip_rotate(x), want), seed


def test_cifar_randaugment_is_timms_or_says_what_is_missing():
    from tks_kernels.data import static

    try:
        import timm  # noqa: F401
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(ImportError, match="needs timm, torchvision and Pillow; missing or broken: .*timm"):
            static.cifar_randaugment_transform(static.CIFAR10_MEAN, static.CIFAR10_STD)
        return
    tf = static.cifar_randaugment_transform(static.CIFAR10_MEAN, static.CIFAR10_STD)
    names = [type(t).__name__ for t in tf.transforms]
    assert names[0] == "RandomCrop" and "RandAugment" in names and names[-1] == "RandomErasing"


@pytest.mark.parametrize("backend", BACKENDS)
def test_strict_firing_on_exact_ties_on_every_backend(backend):
    # tau=2, v_reset=0: h_1 = x/2 = 0.5 = V_th exactly; h_2 = 0.5 + (1 - 0.5)/2 = 0.75
    lif = tks_kernels.LIF(tau=2.0, v_threshold=0.5, v_reset=0.0, step_mode="m", backend=backend,
                          fire_at_threshold=False)
    x = torch.ones(4, 3, 5)
    s = lif(x)
    want = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(4, 1, 1).expand(4, 3, 5)  # after the spike: reset to 0
    assert torch.equal(s, want)
    lif_ge = tks_kernels.LIF(tau=2.0, v_threshold=0.5, v_reset=0.0, step_mode="m", backend=backend)
    assert torch.equal(lif_ge(x), torch.ones(4, 3, 5))  # h >= V_th: every tie fires


def test_paper_neuron_in_the_models_fires_strictly():
    from tks_kernels import models

    model = models.create("mlp", num_classes=3, in_channels=1, input_size=2, T=2)
    lif = next(m for m in model.modules() if isinstance(m, tks_kernels.LIF))
    assert lif.cfg.fire_at_threshold is False
    assert math.isclose(lif.v_threshold, 0.5)
