"""Event-camera data sets: readers for the raw files, integration into T frames by event
count (SpikingJelly's split_by='number') or in T equal time bins (tonic's n_time_bins, the
TKS authors'), resizing, augmentation, and a per-sample on-disk cache.

The cache holds one ``<stem>.<size>-<mtime_ns>.npz`` per sample (one array ``frames``):
the name carries the source file's size and modification time, so a replaced source is
integrated again; the zip's CRC-32, the shape and the dtype are checked on every read,
and a damaged entry is rebuilt from its source (with one warning).

An event stream is Events(x, y, t, p), int64 arrays [N] in file order; a sample becomes
frames float32 [T, 2, H, W]: channel 0 counts the OFF events (p <= 0), channel 1 the ON
events (p > 0), slice j the events [j*(N//T), (j+1)*(N//T)), the last slice up to N.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from .. import _numbers
from .splits import natural_key, ordered_split, stratified_split

CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck")
CIFAR10_DVS_SENSOR = (128, 128)   # (H, W)
NCALTECH101_SENSOR = (180, 240)   # (H, W), as SpikingJelly's NCaltech101.get_H_W
RESIZE_MODES = ("bilinear", "align_corners", "area")
FRAMES_BY = ("count", "time")
EVENT_AUGMENTS = ("flip_roll", "crop_flip_rotate")
SPLITS = ("stratified", "ordered")

Size = Union[int, Sequence[int], None]


class Events(NamedTuple):
    """One sample's events, int64 arrays [N] in file order."""
    x: np.ndarray  # column
    y: np.ndarray  # row
    t: np.ndarray  # timestamp (microseconds)
    p: np.ndarray  # polarity: 1 ON, 0 (or -1) OFF


def read_aedat(path: os.PathLike | str) -> Events:
    """A CIFAR10-DVS AEDAT 2.0 file -> Events on the 128x128 sensor.

    Header lines start with '#'; then big-endian events of 8 bytes: uint32 address,
    uint32 timestamp. Decoded as SpikingJelly's cifar10_dvs.py does: from the address,
    x' = bits 1-7, y' = bits 8-14, p' = bit 0; then x = 127 - y', y = 127 - x', p = 1 - p'
    (the recordings are rotated and their polarity inverted).
    """
    data = Path(path).read_bytes()
    if not data.startswith(b"#"):
        raise ValueError(f"CIFAR10-DVS: {path} is not an AEDAT 2.0 file: it does not start "
                         f"with the '#!AER-DAT2.0' header line"
                         + (" (the file is empty)" if not data else ""))
    start = 0
    while data.startswith(b"#", start):
        end = data.find(b"\n", start)
        if end < 0:
            raise ValueError(f"CIFAR10-DVS: {path} is not an AEDAT 2.0 file: its '#' "
                             f"header has no end of line")
        start = end + 1
    if (len(data) - start) % 8:
        raise ValueError(f"CIFAR10-DVS: {path} is not an AEDAT 2.0 file: after the "
                         f"'#' header come {len(data) - start} bytes, not a whole number "
                         f"of 8-byte events (uint32 address, uint32 timestamp, big-endian)")
    words = np.frombuffer(data, dtype=">u4", offset=start).astype(np.int64).reshape(-1, 2)
    addr, t = words[:, 0], words[:, 1]
    raw_x = (addr & 0xFE) >> 1
    raw_y = (addr & 0x7F00) >> 8
    raw_p = addr & 1
    return Events(x=127 - raw_y, y=127 - raw_x, t=t, p=1 - raw_p)


def read_atis_bin(path: os.PathLike | str) -> Events:
    """An N-Caltech101 / N-MNIST ATIS .bin file -> Events.

    5 bytes per event: x = byte 0, y = byte 1, p = bit 7 of byte 2, t = the low 7 bits of
    byte 2 and bytes 3, 4 (23 bits, big-endian), as SpikingJelly's load_ATIS_bin.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise ValueError(f"N-Caltech101: {path} is not an ATIS .bin file: {raw.size} "
                         f"bytes, not a whole number of 5-byte (40-bit) events")
    raw = raw.astype(np.int64).reshape(-1, 5)
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    return Events(x=raw[:, 0], y=raw[:, 1], t=t, p=raw[:, 2] >> 7)


def read_events_npz(path: os.PathLike | str) -> Events:
    """A .npz holding 1-D integer arrays x, y, t, p of equal length -> Events."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # not a zip, pickled objects, truncated: all the same to a user
        raise ValueError(f"events .npz: {path} is not a .npz file with arrays x, y, t, p: "
                         f"{e}") from e
    missing = [k for k in "xytp" if k not in arrays]
    if missing:
        raise ValueError(f"events .npz: {path} lacks the arrays {', '.join(missing)}; "
                         f"expected x, y, t, p (one sample per file); found "
                         f"{sorted(arrays) or 'no arrays'}")
    lengths = {k: arrays[k].shape for k in "xytp"}
    if any(len(s) != 1 for s in lengths.values()) or len(set(lengths.values())) != 1:
        raise ValueError(f"events .npz: {path}: x, y, t, p must be 1-D arrays of one "
                         f"length; found shapes {lengths}")
    out = {}
    for k in "xytp":
        a = arrays[k]
        if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
            raise ValueError(f"events .npz: {path}: {k} holds non-integer values")
        out[k] = a.astype(np.int64)
    return Events(**out)


def integrate_by_count(events: Events, T: int, sensor_size: Sequence[int]) -> np.ndarray:
    """Events -> frames float32 [T, 2, H, W] of event counts (split_by='number').

    Slice j holds the events [j*(N//T), (j+1)*(N//T)) in file order, the last slice the
    rest up to N (so with N < T all events fall in the last slice, as in SpikingJelly).
    """
    if T <= 0:
        raise ValueError(f"T must be a positive number of frames, got T={T}")
    H, W = (int(s) for s in sensor_size)
    x, y, p = events.x, events.y, events.p
    n = len(x)
    if n and (x.min() < 0 or y.min() < 0 or x.max() >= W or y.max() >= H):
        raise ValueError(f"events lie outside the {H}x{W} (HxW) sensor: x in "
                         f"[{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}]; "
                         f"check sensor_size")
    per_slice = n // T
    if per_slice:
        frame = np.minimum(np.arange(n) // per_slice, T - 1)
    else:
        frame = np.full(n, T - 1)
    flat = ((frame * 2 + (p > 0)) * H + y) * W + x
    counts = np.bincount(flat, minlength=T * 2 * H * W)
    return counts.reshape(T, 2, H, W).astype(np.float32)


def integrate_by_time(events: Events, T: int, sensor_size: Sequence[int]) -> np.ndarray:
    """Events -> frames float32 [T, 2, H, W] of event counts in T equal time bins, as tonic's
    ``ToFrame(n_time_bins=T)`` (the TKS authors' DVS frames, through BrainCog).

    With t0, t1 the first and last timestamps in file order and ``w = (t1 - t0) // T``
    (integer division), bin j holds the events with ``t0 + j*w <= t < t0 + (j+1)*w``,
    located by ``searchsorted`` on the timestamps (which tonic takes to be sorted):
    events at or after ``t0 + T*w`` (the last one, at least when T divides t1 - t0) are
    not counted, and a recording shorter than T time units gives empty frames, as tonic's.
    """
    if T <= 0:
        raise ValueError(f"T must be a positive number of frames, got T={T}")
    H, W = (int(s) for s in sensor_size)
    x, y, t, p = events.x, events.y, events.t, events.p
    n = len(x)
    if n and (x.min() < 0 or y.min() < 0 or x.max() >= W or y.max() >= H):
        raise ValueError(f"events lie outside the {H}x{W} (HxW) sensor: x in "
                         f"[{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}]; "
                         f"check sensor_size")
    counts = np.zeros((T, 2, H, W), dtype=np.float32)
    if n == 0:
        return counts
    t = np.asarray(t, dtype=np.int64)
    window = (int(t[-1]) - int(t[0])) // T
    starts = np.arange(T, dtype=np.int64) * window + int(t[0])
    lo, hi = np.searchsorted(t, starts), np.searchsorted(t, starts + window)
    for j in range(T):
        a, b = int(lo[j]), int(hi[j])
        if b > a:
            flat = ((p[a:b] > 0).astype(np.int64) * H + y[a:b]) * W + x[a:b]
            counts[j] = np.bincount(flat, minlength=2 * H * W).reshape(2, H, W)
    return counts


def resize_frames(frames: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """frames [T, 2, H, W] -> [T, 2, size[0], size[1]].

    'bilinear': antialiased bilinear interpolation, what torchvision's Resize does on
    tensors (the 48x48 VGGSNN recipe of TET); 'align_corners': bilinear with
    align_corners=True and no antialiasing, BrainCog's ``F.interpolate`` (the TKS
    authors'); 'area': adaptive average pooling.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(frames.shape[-2:]) == size:
        return frames
    if mode == "bilinear":
        return torch.nn.functional.interpolate(frames, size=size, mode="bilinear",
                                               align_corners=False, antialias=True)
    if mode == "align_corners":
        return torch.nn.functional.interpolate(frames, size=size, mode="bilinear", align_corners=True)
    if mode == "area":
        return torch.nn.functional.adaptive_avg_pool2d(frames, size)
    raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")


def random_flip_roll(x: torch.Tensor, max_shift: int = 5) -> torch.Tensor:
    """x [T, 2, H, W] -> flipped left-right with probability 1/2, then rolled by a random
    shift in [-max_shift, max_shift] on both axes, the same for all T (TET's DVS recipe)."""
    if torch.rand(()) < 0.5:
        x = x.flip(-1)
    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,)))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def random_crop_flip_rotate(x: torch.Tensor, padding: int = 4, degrees: float = 15.0) -> torch.Tensor:
    """x [T, 2, H, W] -> torchvision's ``RandomCrop((H, W), padding) -> RandomHorizontalFlip()
    -> RandomRotation(degrees)`` on the tensor, the same draw for every frame (the TKS
    authors' CIFAR10-DVS augmentation, through BrainCog).

    The draws come from torch's global generator in torchvision's order (crop top, crop
    left, flip, angle), and the rotation is torchvision's tensor path: nearest neighbour,
    about the centre, no expansion, zeros outside, on ``grid_sample`` with
    ``align_corners=False``.
    """
    H, W = x.shape[-2], x.shape[-1]
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    top = int(torch.randint(0, padded.shape[-2] - H + 1, size=(1,)).item())
    left = int(torch.randint(0, padded.shape[-1] - W + 1, size=(1,)).item())
    x = padded[..., top:top + H, left:left + W]
    if torch.rand(1) < 0.5:
        x = x.flip(-1)
    angle = float(torch.empty(1).uniform_(-float(degrees), float(degrees)).item())
    return rotate_nearest(x, angle)


def rotate_nearest(x: torch.Tensor, angle: float) -> torch.Tensor:
    """x [..., H, W] rotated by ``angle`` degrees counter-clockwise about its centre, as
    torchvision's ``F.rotate(x, angle)`` on a tensor (nearest, zeros outside)."""
    import math

    H, W = x.shape[-2], x.shape[-1]
    r = math.radians(-angle)  # torchvision builds the inverse map from -angle
    theta = torch.tensor([[math.cos(r), math.sin(r), 0.0], [-math.sin(r), math.cos(r), 0.0]],
                         dtype=torch.float32)
    # torchvision's _gen_affine_grid: pixel centres relative to the image centre, mapped by
    # theta, then scaled to grid_sample's [-1, 1] with align_corners=False.
    xs = torch.linspace(-W * 0.5 + 0.5, W * 0.5 - 0.5, W)
    ys = torch.linspace(-H * 0.5 + 0.5, H * 0.5 - 0.5, H)
    base = torch.stack([xs.expand(H, W), ys.unsqueeze(1).expand(H, W), torch.ones(H, W)], dim=-1)
    grid = (base.view(1, H * W, 3) @ theta.T).view(1, H, W, 2) / torch.tensor([0.5 * W, 0.5 * H])
    flat = x.reshape(1, -1, H, W).to(torch.float32)
    out = torch.nn.functional.grid_sample(flat, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.reshape(x.shape).to(x.dtype)


# A cache entry's name: the source's stem, byte size and modification time (ns).
_CACHE_ENTRY = re.compile(r"(?P<stem>.*)\.(?P<size>\d+)-(?P<mtime>\d+)\.npz\Z")


def cache_entry_name(source: Path) -> str:
    """The cache file name of the event file ``source``: ``<stem>.<size>-<mtime_ns>.npz``,
    so a source replaced after caching is integrated again."""
    try:
        st = os.stat(source)
    except OSError as e:
        raise FileNotFoundError(f"cannot read the event file {source}: {e.strerror}") from e
    return f"{source.stem}.{st.st_size}-{st.st_mtime_ns}.npz"


class CacheEntryError(ValueError):
    """A frame-cache file that cannot be used (missing, truncated, corrupted, wrong shape
    or dtype); the dataset rebuilds it from the event file."""


def load_cached_frames(path: Path, shape: Sequence[int]) -> np.ndarray:
    """A cache file -> frames float32 ``shape``; :class:`CacheEntryError` (naming the file
    and why) unless it is a .npz holding exactly that array with a matching CRC-32."""
    shape = tuple(int(s) for s in shape)
    try:
        with open(path, "rb") as f:  # our own handle: np.load leaks its own when the file is damaged
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise CacheEntryError(f"the frame cache {path} is not a .npz file")
            if z.files != ["frames"]:
                raise CacheEntryError(f"the frame cache {path} holds the arrays {z.files}, not one "
                                      f"array 'frames'")
            frames = z["frames"]  # reading the member checks its CRC-32
    except CacheEntryError:
        raise
    except Exception as e:  # truncated, not a zip, bad CRC, unreadable: all mean "rebuild"
        raise CacheEntryError(f"the frame cache {path} cannot be read ({type(e).__name__}: {e})") from None
    if frames.dtype != np.float32 or frames.shape != shape:
        raise CacheEntryError(f"the frame cache {path} holds {frames.dtype} {list(frames.shape)}, not "
                              f"float32 {list(shape)}")
    return frames


def _save_atomic(path: Path, array: np.ndarray) -> None:
    # Write to a temporary file in the same folder, then rename: an interrupted run or a
    # concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, frames=array)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared cache must be readable
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class EventFrames(Dataset):
    """Event samples integrated into frames, cached on disk as one .npz per sample.

    Returns (x float32 [T, 2, H, W], y int64 []). Missing or out-of-date cache files
    (their source changed: another size or modification time) are written at
    construction (with a progress bar); later constructions with the same T, sensor size,
    frame size and resize mode read them back. A cache file found damaged when read
    (truncated, corrupted, wrong shape or dtype) is rebuilt from its source, with one
    warning per dataset.
    """

    def __init__(self, title: str, files: Sequence[Path], labels: Sequence[int],
                 classes: Sequence[str], reader: Callable[[Path], Events],
                 sensor_size: Sequence[int], T: int, size: Optional[Sequence[int]],
                 resize_mode: str, cache_folder: Path, augment: bool = False,
                 progress: bool = True, frames_by: str = "count",
                 augment_policy: str = "flip_roll") -> None:
        self.title = title
        self.frames_by = frames_by
        self.augment_policy = augment_policy
        self.files = list(files)
        self.targets = torch.as_tensor(list(labels), dtype=torch.int64)
        self.classes = list(classes)
        self.T = T
        self.sensor_size = tuple(int(s) for s in sensor_size)
        self.size = tuple(int(s) for s in size) if size is not None else self.sensor_size
        self.resize_mode = resize_mode
        self.cache_folder = cache_folder
        self.augment = augment
        self.reader = reader
        self.frame_shape = (T, 2) + self.size
        self._warned = False
        self.cache_files = [cache_folder / self.classes[int(y)] / cache_entry_name(f)
                            for f, y in zip(self.files, self.targets)]
        todo = [(f, c) for f, c in zip(self.files, self.cache_files) if not c.is_file()]
        listings: dict = {}
        stale = sum(bool(self._stale_entries(f, c, listings)) for f, c in todo)
        if stale:
            warnings.warn(f"{title}: {stale} cached frame files in {cache_folder} are out of date "
                          f"(their event files changed since) or in an older format; integrating "
                          f"them again", stacklevel=2)
        for source, cached in tqdm(todo, disable=not progress or not todo, unit="file",
                                   desc=f"{title}: integrating events into T={T} frames"):
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OSError(f"{title}: cannot create the frame cache {cached.parent} "
                              f"({e}); pass cache_dir= a writable folder") from e
            self._write_entry(source, cached, listings)

    @staticmethod
    def _stale_entries(source: Path, cached: Path, listings: dict) -> list:
        """Other cache files of ``source``'s sample: older keys, or the older .npy format."""
        folder = cached.parent
        if folder not in listings:
            listings[folder] = os.listdir(folder) if folder.is_dir() else []
        out = []
        for name in listings[folder]:
            m = _CACHE_ENTRY.match(name)
            if name != cached.name and ((m and m["stem"] == source.stem) or name == source.stem + ".npy"):
                out.append(folder / name)
        return out

    def _integrate(self, source: Path) -> np.ndarray:
        events = self.reader(source)
        if len(events.x) == 0:
            raise ValueError(f"{self.title}: {source} holds no events")
        try:
            integrate = integrate_by_time if self.frames_by == "time" else integrate_by_count
            counts = integrate(events, self.T, self.sensor_size)
        except ValueError as e:
            raise ValueError(f"{self.title}: {source}: {e}") from None
        frames = resize_frames(torch.from_numpy(counts), self.size, self.resize_mode)
        return frames.numpy().astype(np.float32, copy=False)

    def _write_entry(self, source: Path, cached: Path, listings: Optional[dict] = None) -> np.ndarray:
        frames = self._integrate(source)
        cached.parent.mkdir(parents=True, exist_ok=True)
        _save_atomic(cached, frames)
        for old in self._stale_entries(source, cached, {} if listings is None else listings):
            try:
                os.unlink(old)
            except OSError:  # another process removed it first
                pass
        return frames

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            frames = load_cached_frames(self.cache_files[i], self.frame_shape)
        except CacheEntryError as e:
            if not self._warned:
                self._warned = True
                warnings.warn(f"{self.title}: {e}; rebuilding it from {self.files[i]} (later rebuilds "
                              f"of this data set are not reported)", stacklevel=2)
            frames = self._write_entry(self.files[i], self.cache_files[i])
        x = torch.from_numpy(frames)
        if self.augment:
            x = random_crop_flip_rotate(x) if self.augment_policy == "crop_flip_rotate" else random_flip_roll(x)
        return x, self.targets[i]


def _as_size(size: Size, sensor_size: Sequence[int]) -> tuple[int, int]:
    if size is None:
        return int(sensor_size[0]), int(sensor_size[1])
    if _numbers.is_integer(size):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
    return size


def _scan(title: str, root: Path, ext: str, class_names: Optional[Sequence[str]],
          layout: str) -> tuple[list[Path], list[int], list[str]]:
    """root/<class>/*<ext> -> (files, labels, classes); classes in the given order or
    sorted, files in natural order, so the listing is the same on every machine."""
    expected = f"{title}: expected {layout} in {root}"
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file, not a folder"
        raise FileNotFoundError(f"{expected}; found: {root} {what}")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        classes = subdirs
    else:
        classes = list(class_names)
        missing = [c for c in classes if c not in subdirs]
        if missing and len(missing) < len(classes):
            raise FileNotFoundError(f"{expected}; missing class folders: "
                                    f"{', '.join(missing)}")
    if not classes or (class_names is not None and not set(classes) & set(subdirs)):
        entries = sorted(os.listdir(root))
        found = ", ".join(entries[:12]) + (" ..." if len(entries) > 12 else "") or "nothing"
        raise FileNotFoundError(f"{expected}; found no class folders, only: {found}")
    files, labels = [], []
    for label, c in enumerate(classes):
        names = sorted((p.name for p in (root / c).iterdir()
                        if p.is_file() and p.suffix.lower() == ext), key=natural_key)
        if not names:
            raise FileNotFoundError(f"{expected}; the class folder {root / c} holds no "
                                    f"{ext} files")
        files += [root / c / n for n in names]
        labels += [label] * len(names)
    return files, labels, classes


def event_folder(title: str, key: str, root: os.PathLike | str, *, ext: str,
                 reader: Callable[[Path], Events], sensor_size: Sequence[int],
                 class_names: Optional[Sequence[str]], layout: str, train: bool, T: int,
                 augment: bool, size: Size, cache_dir: Optional[os.PathLike | str],
                 test_fraction: float, split_seed: Optional[int], resize_mode: str,
                 progress: bool, frames_by: str = "count", augment_policy: str = "flip_roll",
                 split: str = "stratified") -> EventFrames:
    """A folder of event files root/<class>/*<ext> -> the train or test EventFrames.

    frames_by: 'count' (T slices of equal event count, SpikingJelly's) or 'time' (T equal
    time bins, tonic's, the TKS authors'); augment_policy: 'flip_roll' (TET's) or
    'crop_flip_rotate' (the authors' CIFAR10-DVS recipe); split: 'stratified' (per class,
    shuffled with split_seed; None: the first files are the test set) or 'ordered' (per
    class in natural file order, the first round((1 - test_fraction) * n) train and the
    rest test, BrainCog's).
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    for name, value, allowed in (("frames_by", frames_by, FRAMES_BY), ("augment_policy", augment_policy,
                                 EVENT_AUGMENTS), ("split", split, SPLITS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {name}={value!r}")
    root = Path(root)
    files, labels, classes = _scan(title, root, ext, class_names, layout)
    out_size = _as_size(size, sensor_size)
    if split == "ordered":
        train_idx, test_idx = ordered_split(np.asarray(labels), test_fraction)
    else:
        train_idx, test_idx = stratified_split(np.asarray(labels), test_fraction, split_seed)
    idx = train_idx if train else test_idx
    # Keyed by everything that changes a frame, so another T or size never reads a
    # wrong cache. Default place: a folder next to the data, not inside it (class
    # folders stay clean and the data folder may be read-only when cache_dir is given).
    base = Path(cache_dir) if cache_dir is not None else root.parent / f"{root.name}_frames"
    sh, sw = (int(s) for s in sensor_size)
    mode = resize_mode if out_size != (sh, sw) else "none"
    bins = "_timebins" if frames_by == "time" else ""  # count-binned caches keep their old names
    folder = base / f"{key}_T{T}_{sh}x{sw}_to_{out_size[0]}x{out_size[1]}_{mode}{bins}"
    return EventFrames(title, [files[i] for i in idx], [labels[i] for i in idx], classes,
                       reader, sensor_size, T, out_size, resize_mode, folder,
                       augment=augment, progress=progress, frames_by=frames_by,
                       augment_policy=augment_policy)


def cifar10_dvs(root: os.PathLike | str, train: bool = True, *, T: int = 10,
                augment: bool = False, size: Size = 48,
                cache_dir: Optional[os.PathLike | str] = None, test_fraction: float = 0.1,
                split_seed: Optional[int] = 0, resize_mode: str = "bilinear",
                progress: bool = True, frames_by: str = "count", augment_policy: str = "flip_roll",
                split: str = "stratified") -> EventFrames:
    """CIFAR10-DVS from root/<class>/*.aedat (the 10 CIFAR-10 class names) ->
    x float32 [T, 2, size, size], y int64. Per-class split: test_fraction of each class,
    shuffled with split_seed (None: the first files in natural order, the TEBN split)."""
    return event_folder(
        "CIFAR10-DVS", "cifar10_dvs", root, ext=".aedat", reader=read_aedat,
        sensor_size=CIFAR10_DVS_SENSOR, class_names=CIFAR10_DVS_CLASSES,
        layout=f"class folders root/<class>/*.aedat for the 10 classes "
               f"{', '.join(CIFAR10_DVS_CLASSES)}",
        train=train, T=T, augment=augment, size=size, cache_dir=cache_dir,
        test_fraction=test_fraction, split_seed=split_seed, resize_mode=resize_mode,
        progress=progress, frames_by=frames_by, augment_policy=augment_policy, split=split)


def ncaltech101(root: os.PathLike | str, train: bool = True, *, T: int = 10,
                augment: bool = False, size: Size = 48,
                cache_dir: Optional[os.PathLike | str] = None, test_fraction: float = 0.1,
                split_seed: Optional[int] = 0, resize_mode: str = "bilinear",
                progress: bool = True, frames_by: str = "count", augment_policy: str = "flip_roll",
                split: str = "stratified") -> EventFrames:
    """N-Caltech101 from root/<class>/*.bin (or root/Caltech101/<class>/*.bin, as the
    archive extracts) on the 180x240 sensor -> x float32 [T, 2, size, size], y int64;
    labels index the class folders in sorted order."""
    root = Path(root)
    if (root / "Caltech101").is_dir():
        root = root / "Caltech101"
    return event_folder(
        "N-Caltech101", "ncaltech101", root, ext=".bin", reader=read_atis_bin,
        sensor_size=NCALTECH101_SENSOR, class_names=None,
        layout="class folders root/<class>/*.bin (the Caltech101 folder of Caltech101.zip)",
        train=train, T=T, augment=augment, size=size, cache_dir=cache_dir,
        test_fraction=test_fraction, split_seed=split_seed, resize_mode=resize_mode,
        progress=progress, frames_by=frames_by, augment_policy=augment_policy, split=split)


def events_npz(root: os.PathLike | str, train: bool = True, *,
               sensor_size: Optional[Sequence[int]] = None, T: int = 10,
               augment: bool = False, size: Size = 48,
               cache_dir: Optional[os.PathLike | str] = None, test_fraction: float = 0.1,
               split_seed: Optional[int] = 0, resize_mode: str = "bilinear",
               progress: bool = True, frames_by: str = "count", augment_policy: str = "flip_roll",
               split: str = "stratified") -> EventFrames:
    """Any event data set as root/<class>/*.npz, one sample per file with arrays x, y, t, p;
    sensor_size=(H, W) is required. -> x float32 [T, 2, size, size], y int64; labels
    index the class folders in sorted order."""
    if sensor_size is None or len(tuple(sensor_size)) != 2 or min(sensor_size) <= 0:
        raise ValueError(f"events_npz needs sensor_size=(H, W), the sensor's height and "
                         f"width in pixels; got {sensor_size!r}")
    return event_folder(
        "events .npz", "events_npz", root, ext=".npz", reader=read_events_npz,
        sensor_size=tuple(int(s) for s in sensor_size), class_names=None,
        layout="class folders root/<class>/*.npz, each file one sample with arrays x, y, t, p",
        train=train, T=T, augment=augment, size=size, cache_dir=cache_dir,
        test_fraction=test_fraction, split_seed=split_seed, resize_mode=resize_mode,
        progress=progress, frames_by=frames_by, augment_policy=augment_policy, split=split)
