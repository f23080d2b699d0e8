"""Static image data sets: scikit-learn's digits, CIFAR-10/100 from the python batches,
ImageNet from an ImageFolder tree. Each sample is (x float32 [C, H, W], y int64 [])."""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import _numbers
from .splits import stratified_split

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

# Per-channel mean and std of the training images (the true std, not the 0.2023/0.1994/
# 0.2010 often copied for CIFAR-10, which is a std of per-image means).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageTensorDataset(Dataset):
    """Images held in memory, normalised (and augmented) per sample on access.

    images: [N, C, H, W], uint8 (scaled by 1/255) or float32 already in [0, 1];
    labels: int64 [N]. Returns (x float32 [C, H, W], y int64 []).
    augment: random crop from the image zero-padded by `pad` pixels, then a horizontal
    flip with probability 1/2 (the standard CIFAR recipe). It draws from torch's global
    generator, which DataLoader seeds differently in each worker.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                 mean: Sequence[float], std: Sequence[float], augment: bool = False,
                 pad: int = 4, pil_transform: Optional[Callable] = None) -> None:
        if images.ndim != 4 or labels.shape != images.shape[:1]:
            raise ValueError(f"images must be [N, C, H, W] and labels [N], got "
                             f"{tuple(images.shape)} and {tuple(labels.shape)}")
        self.images = images
        self.targets = labels.to(torch.int64)
        self.classes = list(classes)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment
        self.pad = pad
        # augment with pil_transform: a PIL image -> a normalised tensor (timm's pipeline)
        self.pil_transform = pil_transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        if self.augment and self.pil_transform is not None:
            from PIL import Image

            return self.pil_transform(Image.fromarray(x.permute(1, 2, 0).numpy())), self.targets[i]
        x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
        if self.augment:
            x = random_crop_flip(x, self.pad)
        return (x - self.mean) / self.std, self.targets[i]


def random_crop_flip(x: torch.Tensor, pad: int) -> torch.Tensor:
    """x [C, H, W] in [0, 1] -> a random HxW crop of x zero-padded by `pad`, flipped
    left-right with probability 1/2 (torchvision's RandomCrop(padding=pad) + RandomHorizontalFlip)."""
    _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
    x = padded[:, top:top + h, left:left + w]
    if torch.rand(()) < 0.5:
        x = x.flip(-1)
    return x.contiguous()


def digits(train: bool = True, *, augment: bool = False, test_fraction: float = 0.2,
           split_seed: Optional[int] = 0) -> ImageTensorDataset:
    """scikit-learn's digits (1797 8x8 grey images, 10 classes, no download): a fixed
    per-class split (80/20, seed 0 by default). x float32 [1, 8, 8] in [0, 1], y int64."""
    if augment:
        # Crops and flips change what a digit is; refuse rather than ignore the flag.
        raise ValueError("digits: augment=True is not supported (random crops and flips "
                         "do not preserve 8x8 digit classes); pass augment=False")
    from sklearn.datasets import load_digits  # imported here: only digits needs scikit-learn

    d = load_digits()
    # Pixel values are integers 0..16.
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    train_idx, test_idx = stratified_split(d.target, test_fraction, split_seed)
    idx = torch.from_numpy(train_idx if train else test_idx)
    return ImageTensorDataset(images[idx], labels[idx], [str(c) for c in range(10)],
                              mean=(0.0,), std=(1.0,))


class SpikeTrainDigits(Dataset):
    """Digits as Bernoulli spike trains: at each of T steps pixel (c, i, j) spikes with
    probability ``min(1, gain * x[c, i, j])``. Returns (x float32 [T, 1, 8, 8] of 0/1,
    y int64 []).

    Training samples draw fresh spikes at every access from torch's global generator
    (which the training loop seeds per epoch, so a resumed run sees the same spikes).
    The test set is fixed: each image encoded ``encodings`` times, drawn step by step from
    one seeded generator, so the first t steps are the same for any T >= t.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, T: int, gain: float, fixed: bool,
                 encodings: int = 1, seed: int = 0) -> None:
        self.T = T
        self.prob = (images * gain).clamp(0.0, 1.0)
        self.classes = [str(c) for c in range(10)]
        self.fixed = fixed
        if fixed:
            g = torch.Generator().manual_seed(seed)
            prob = self.prob.repeat(encodings, 1, 1, 1)
            steps = [(torch.rand(prob.shape, generator=g) < prob) for _ in range(T)]
            self.frames = torch.stack(steps, 1).to(torch.float32)  # [encodings*N, T, 1, 8, 8]
            self.targets = labels.repeat(encodings)
        else:
            self.targets = labels
        self.distinct_samples = len(labels)  # images; the test set repeats each `encodings` times

    @property
    def num_classes(self) -> int:
        return 10

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fixed:
            return self.frames[i], self.targets[i]
        p = self.prob[i]
        return (torch.rand((self.T,) + tuple(p.shape)) < p).to(torch.float32), self.targets[i]


def digits_spikes(train: bool = True, *, T: int = 8, augment: bool = False, gain: float = 0.6,
                  test_encodings: int = 4, test_fraction: float = 0.2,
                  split_seed: Optional[int] = 0) -> SpikeTrainDigits:
    """scikit-learn's digits (the split of :func:`digits`) as Bernoulli spike trains
    (:class:`SpikeTrainDigits`): a noisy built-in task where one step is a weak sample
    and more steps average the noise away, so accuracy grows with T. x float32
    [T, 1, 8, 8] of 0/1, y int64. The test set holds every test image ``test_encodings``
    times, each with its own fixed spikes."""
    if augment:
        raise ValueError("digits_spikes: augment=True is not supported (the spikes are the noise); "
                         "pass augment=False")
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0 < gain:
        raise ValueError(f"gain must be a number > 0, got gain={gain!r}")
    if isinstance(test_encodings, bool) or not isinstance(test_encodings, int) or test_encodings < 1:
        raise ValueError(f"test_encodings must be a positive int, got test_encodings={test_encodings!r}")
    base = digits(train, test_fraction=test_fraction, split_seed=split_seed)
    return SpikeTrainDigits(base.images, base.targets, int(T), float(gain), fixed=not train,
                            encodings=test_encodings, seed=1234)


_CIFAR = {
    "cifar10": dict(title="CIFAR-10", folder="cifar-10-batches-py",
                    train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    describe="the python batches data_batch_1..5 and test_batch",
                    meta="batches.meta", names_key="label_names", label_key="labels",
                    num_classes=10, mean=CIFAR10_MEAN, std=CIFAR10_STD),
    "cifar100": dict(title="CIFAR-100", folder="cifar-100-python",
                     train=["train"], test=["test"],
                     describe="the python files train and test",
                     meta="meta", names_key="fine_label_names", label_key="fine_labels",
                     num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD),
}


def _listing(path: Path, limit: int = 12) -> str:
    """What a folder holds, for error messages."""
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is a file, not a folder"
    names = sorted(os.listdir(path))
    if not names:
        return f"{path} is empty"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _find_cifar_folder(spec: dict, root: Path, files: list[str]) -> Path:
    # Accept the extracted folder itself or the folder it was extracted into.
    for folder in (root, root / spec["folder"]):
        if all((folder / f).is_file() for f in files):
            return folder
    # Report on the extracted folder when it is there, else on root.
    where = root / spec["folder"] if (root / spec["folder"]).is_dir() else root
    raise FileNotFoundError(
        f"{spec['title']}: expected {spec['describe']} in {root} or in "
        f"{root / spec['folder']} (the {spec['folder']} folder from {CIFAR_URL}); "
        f"missing in {where}: {', '.join(f for f in files if not (where / f).is_file())}; "
        f"found: {_listing(where)}")


_NP_CORE = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core


def _cifar_globals() -> dict:
    """The only globals a CIFAR python batch (or one re-pickled by Python 3 or numpy 2)
    refers to: numpy's array reconstructors, ndarray, dtype, array scalars, and
    _codecs.encode (how protocol 2 stores bytes). Anything else, os.system say, is refused."""
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}
    for sub, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")):
        fn = getattr(getattr(_NP_CORE, sub), name, None)
        if fn is not None:
            for core in ("numpy.core", "numpy._core"):
                allowed[(f"{core}.{sub}", name)] = fn
    return allowed


_CIFAR_GLOBALS = _cifar_globals()


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the globals of _CIFAR_GLOBALS: a crafted batch cannot run code."""

    def find_class(self, module: str, name: str):
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a CIFAR batch never holds (only numpy "
                f"arrays, lists, bytes, str and numbers); refusing to load it") from None


def _unpickle(path: Path) -> dict:
    # The batches were pickled by Python 2; encoding='bytes' is what the CIFAR page
    # prescribes. Keys come back as bytes (or str if re-pickled by Python 3): accept both.
    with open(path, "rb") as f:
        obj = _CifarUnpickler(f, encoding="bytes").load()
    if not isinstance(obj, dict):
        raise ValueError(f"a pickled {type(obj).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_batch(path: Path, label_key: str, num_classes: int,
                     title: str = "CIFAR") -> tuple[np.ndarray, np.ndarray]:
    """One python batch -> (images uint8 [N, 3, 32, 32], labels int64 [N]).

    The batch is a pickled dict: 'data' uint8 [N, 3072], each row the red, green, blue
    32x32 planes in row-major order; label_key ('labels' or 'fine_labels') N ints.
    """
    expected = (f"expected a pickled dict with b'data' (uint8 [N, 3072]) and "
                f"b'{label_key}' (N ints in [0, {num_classes}))")
    try:
        batch = _unpickle(path)
    except Exception as e:  # a truncated or foreign file can fail in many ways
        raise ValueError(f"{title}: {path} is not a python batch ({expected}); "
                         f"unpickling failed: {e}") from e
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{title}: {path} is not a python batch: {expected}; "
                         f"found keys {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if labels.size and labels.dtype.kind not in "iu":
        # Truncating 3.7 to 3 would train on made-up labels: refuse.
        raise ValueError(f"{title}: {path} is not a python batch: {expected}; its "
                         f"b'{label_key}' are {labels.dtype} (e.g. {labels.flat[0].item()!r}), not integers")
    if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072
            or labels.shape != (data.shape[0],)
            or (labels.size and not (0 <= labels.min() and labels.max() < num_classes))):
        raise ValueError(f"{title}: {path} is not a python batch: {expected}; found "
                         f"data {data.dtype} {list(data.shape)} and {len(labels)} labels "
                         f"in [{labels.min() if labels.size else '-'}, "
                         f"{labels.max() if labels.size else '-'}]")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


CIFAR_AUGMENTS = ("crop_flip", "randaugment")


def _missing(*modules: str) -> list[str]:
    import importlib

    out = []
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception as e:  # ImportError, or a torchvision built for another torch
            out.append(f"{m} ({type(e).__name__}: {e})")
    return out


def cifar_randaugment_transform(mean: Sequence[float], std: Sequence[float]) -> Callable:
    """The TKS authors' CIFAR training transform (BrainCog's ``build_transform``), built
    by timm: ``create_transform(32, is_training=True, color_jitter=0.4,
    auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic', re_prob=0.25,
    re_mode='pixel', re_count=1)`` with its first step replaced by ``RandomCrop(32, 4)``:
    crop, flip, RandAugment, to tensor, normalise, RandomErasing. Normalised with
    ``mean``/``std`` (the authors' code trains with ImageNet's and tests with CIFAR's).
    A PIL image -> float32 [3, 32, 32]."""
    missing = _missing("timm", "torchvision", "PIL")
    if missing:
        raise ImportError(
            "CIFAR augment_policy='randaugment' (the TKS authors' RandAugment rand-m9-mstd0.5-inc1 + "
            "RandomErasing 0.25, from timm) needs timm, torchvision and Pillow; missing or broken: "
            f"{'; '.join(missing)}. Install them (pip install timm torchvision, versions matching your "
            "torch), or pass augment_policy='crop_flip' (--data-option augment_policy=crop_flip) for "
            "random crop and flip only")
    from timm.data import create_transform
    from torchvision import transforms

    tf = create_transform(input_size=32, is_training=True, color_jitter=0.4,
                          auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic", re_prob=0.25,
                          re_mode="pixel", re_count=1, mean=tuple(mean), std=tuple(std))
    tf.transforms[0] = transforms.RandomCrop(32, padding=4)
    return tf


def cifar(name: str, root: os.PathLike | str, train: bool = True, *,
          augment: bool = False, augment_policy: str = "crop_flip") -> ImageTensorDataset:
    """CIFAR-10 (name='cifar10') or CIFAR-100 ('cifar100', fine labels) from the python
    batches. x float32 [3, 32, 32] normalised per channel, y int64.
    augment: with augment_policy 'crop_flip', random 32x32 crop with 4 zero pixels of
    padding and horizontal flip; 'randaugment': the TKS authors' pipeline
    (:func:`cifar_randaugment_transform`, needs timm and torchvision)."""
    if augment_policy not in CIFAR_AUGMENTS:
        raise ValueError(f"augment_policy must be one of {CIFAR_AUGMENTS}, got augment_policy={augment_policy!r}")
    spec = _CIFAR[name]
    files = spec["train"] if train else spec["test"]
    folder = _find_cifar_folder(spec, Path(root), files)
    parts = [read_cifar_batch(folder / f, spec["label_key"], spec["num_classes"],
                              spec["title"]) for f in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    classes = [str(c) for c in range(spec["num_classes"])]
    meta = folder / spec["meta"]
    if meta.is_file():  # only names; a missing meta file does not stop training
        try:
            names = _unpickle(meta).get(spec["names_key"])
        except Exception as e:
            raise ValueError(f"{spec['title']}: {meta} is not a pickled dict: {e}") from e
        if names is not None and len(names) == spec["num_classes"]:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    pil_transform = None
    if augment and augment_policy == "randaugment":
        pil_transform = cifar_randaugment_transform(spec["mean"], spec["std"])
    return ImageTensorDataset(images, labels, classes, spec["mean"], spec["std"],
                              augment=augment, pil_transform=pil_transform)


def _as_int64(y: int) -> torch.Tensor:
    # A module-level function, not a lambda, so DataLoader workers can pickle it.
    return torch.tensor(y, dtype=torch.int64)


def imagenet(root: os.PathLike | str, train: bool = True, *, augment: bool = False,
             image_size: int = 224, color_jitter: float = 0.0) -> Dataset:
    """ImageNet from an ImageFolder tree root/train/<class>/*.JPEG, root/val/<class>/*.

    Needs torchvision (to decode JPEGs). x float32 [3, image_size, image_size]
    normalised with the ImageNet mean/std, y int64. augment: RandomResizedCrop and
    horizontal flip, then ColorJitter(color_jitter) on brightness, contrast and saturation
    when color_jitter > 0 (the TKS authors' 0.4, timm's loader); otherwise resize to
    image_size*256/224 and center-crop.
    """
    try:
        from torchvision import datasets, transforms
    except ImportError as e:
        raise ImportError(
            "ImageNet: reading the ImageFolder tree needs torchvision "
            f"(pip install torchvision); importing it failed: {e}") from e
    if not _numbers.is_real(color_jitter) or not color_jitter >= 0:
        raise ValueError(f"color_jitter must be a number >= 0, got color_jitter={color_jitter!r}")
    split = "train" if train else "val"
    folder = Path(root) / split
    has_classes = folder.is_dir() and any(p.is_dir() for p in folder.iterdir())
    if not has_classes:
        raise FileNotFoundError(
            f"ImageNet: expected class folders {folder}/<class>/*.JPEG (an ImageFolder "
            f"tree with train/ and val/ under root; val/ sorted into class folders too); "
            f"found in {folder}: {_listing(folder)}")
    if augment:
        tf = [transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip()]
        if color_jitter:
            tf.append(transforms.ColorJitter(color_jitter, color_jitter, color_jitter))
    else:
        tf = [transforms.Resize(image_size * 256 // 224), transforms.CenterCrop(image_size)]
    tf += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return datasets.ImageFolder(str(folder), transform=transforms.Compose(tf),
                                target_transform=_as_int64)
