"""Checkpoint files that are never silently wrong: a checksummed, atomically written,
code-free container for a plain nested dict of tensors and Python values.

A file is one header line, then the bytes of ``torch.save(payload)``::

    TKS-CHECKPOINT 1 sha256=<64 hex digits> size=<bytes that follow>\\n

- :func:`save` refuses a payload holding a non-finite float (tensor or Python float),
  naming the first one (``model.fc.weight``), or an object that ``torch.load`` with
  ``weights_only=True`` could not read back (a NumPy array, bytes, a Path, a class:
  convert it to a tensor, list or str first). It writes a temporary file in the same folder,
  fsyncs it, keeps the current file as ``<stem>.prev<suffix>`` (a hard link, so the
  name ``path`` always exists), renames the temporary file over ``path`` and fsyncs the
  folder. On any error (ENOSPC, EIO, an interrupt) the temporary file is removed and
  ``path`` (and the previous file) stay byte-identical; a temporary file left by a
  writer killed mid-write (kill -9) is removed by the next save on the same host.
- :func:`load` checks the header, the size and the checksum before unpickling, then
  unpickles with ``weights_only=True`` (a crafted file cannot run code), checks the
  required keys and that every float is finite. Every failure is a
  :class:`CheckpointError` with a one-line message that names the file and, when a
  good previous file is kept, offers it.
"""
from __future__ import annotations

import collections
import errno as _errno
import hashlib
import io
import math
import os
import pickle
import re
import secrets
import socket
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch

__all__ = ["CheckpointError", "NonFiniteError", "save", "load", "verify", "previous_path",
           "first_nonfinite", "MAGIC", "VERSION"]

MAGIC = b"TKS-CHECKPOINT"
VERSION = 1
_HEADER_MAX = 256  # the header line is about 110 bytes

PathLike = Union[str, "os.PathLike[str]"]

# What torch.load(weights_only=True) reads back as itself.
# (Not bytes: protocol 2 pickles b"" as a call of the global `bytes`, which weights_only refuses.)
_ATOMS = (str, int, float, bool, complex, type(None), torch.dtype, torch.device)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: empty, truncated, corrupted, foreign, or
    holding something other than finite tensors and plain values. ``path`` is the file."""

    def __init__(self, message: str, path: Optional[PathLike] = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


class NonFiniteError(CheckpointError):
    """A payload with a NaN or infinite value; ``key`` names the first one
    (``model.layer.weight``, ``optimizer.state.3.exp_avg``)."""

    def __init__(self, message: str, key: str, path: Optional[PathLike] = None) -> None:
        super().__init__(message, path)
        self.key = key


def previous_path(path: PathLike) -> Path:
    """Where :func:`save` keeps the file it replaces: ``run/checkpoint.pt`` ->
    ``run/checkpoint.prev.pt``."""
    p = Path(path)
    return p.with_name(p.stem + ".prev" + p.suffix)


# ----------------------------------------------------------------------------- walking


def _walk(obj: Any, key: str) -> Iterator[Tuple[str, Any]]:
    """(dotted key, leaf) for every leaf of a nested dict/list/tuple."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{key}.{i}" if key else str(i))
    else:
        yield key, obj


def _check_plain(payload: Any) -> None:
    for key, leaf in _walk(payload, ""):
        if isinstance(leaf, (torch.Tensor, torch.Size) + _ATOMS):
            if isinstance(leaf, torch.Tensor) and type(leaf) not in (torch.Tensor, torch.nn.Parameter):
                raise TypeError(f"checkpoint payload: {key} is a {type(leaf).__name__}, a tensor "
                                f"subclass that weights_only loading refuses; store a plain tensor")
            continue
        raise TypeError(f"checkpoint payload: {key} is a {type(leaf).__module__}.{type(leaf).__name__}, "
                        f"which torch.load(weights_only=True) refuses; store a tensor, list, dict, "
                        f"str or number instead")
    for key, container in _containers(payload, ""):
        bad = [k for k in container if not isinstance(k, (str, int))]
        if bad:
            raise TypeError(f"checkpoint payload: {key or 'the top level'} has a key {bad[0]!r} of type "
                            f"{type(bad[0]).__name__}; keys must be str or int")


def _containers(obj: Any, key: str) -> Iterator[Tuple[str, dict]]:
    if isinstance(obj, dict):
        yield key, obj
        for k, v in obj.items():
            yield from _containers(v, f"{key}.{k}" if key else str(k))
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size):
        for i, v in enumerate(obj):
            yield from _containers(v, f"{key}.{i}" if key else str(i))


def first_nonfinite(obj: Any, prefix: str = "") -> Optional[str]:
    """The dotted key of the first NaN or infinite float in a nested dict/list of
    tensors and numbers, or None. One device sync for all tensors together."""
    found = _first_nonfinite_leaf(obj, prefix)
    return None if found is None else found[0]


def _first_nonfinite_leaf(obj: Any, prefix: str = "") -> Optional[Tuple[str, Any]]:
    tensors, keys = [], []
    for key, leaf in _walk(obj, prefix):
        if isinstance(leaf, torch.Tensor):
            if (leaf.is_floating_point() or leaf.is_complex()) and leaf.numel():
                tensors.append(leaf)
                keys.append(key)
        elif isinstance(leaf, float) and not math.isfinite(leaf):
            return key, leaf
        elif isinstance(leaf, complex) and not (math.isfinite(leaf.real) and math.isfinite(leaf.imag)):
            return key, leaf
    if not tensors:
        return None
    # One flag per tensor, grouped by device, then one read: no sync per tensor.
    by_device: Dict[torch.device, list] = collections.defaultdict(list)
    for i, t in enumerate(tensors):
        by_device[t.device].append(i)
    bad = []
    for idx in by_device.values():
        flags = torch.stack([torch.isfinite(tensors[i].detach()).all() for i in idx])
        bad += [idx[j] for j in (~flags).nonzero().flatten().tolist()]
    if not bad:
        return None
    return keys[min(bad)], tensors[min(bad)]


def _nonfinite_message(key: str, leaf: Any) -> str:
    if isinstance(leaf, torch.Tensor):
        t = leaf.detach()
        nan = int(torch.isnan(t).sum())
        inf = int(torch.isinf(t).sum())
        return f"{key} holds {nan} NaN and {inf} infinite values of {t.numel()} ({t.dtype}, {list(t.shape)})"
    return f"{key} is {leaf!r}"


# ----------------------------------------------------------------------------- writing


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder: nothing to sync there
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (_errno.EINVAL, _errno.ENOTSUP, _errno.EBADF):
            raise
    finally:
        os.close(fd)


def _describe_os_error(e: OSError) -> str:
    code = _errno.errorcode.get(e.errno, "?") if e.errno is not None else None
    what = e.strerror or str(e)
    return f"{what} (errno {e.errno} {code})" if code else what


def save(path: PathLike, payload: Dict[str, Any], *, keep_previous: bool = True,
         check_finite: bool = True) -> Path:
    """Write ``payload`` (a dict of tensors, numbers, str, None and nested
    dicts/lists/tuples of them) to ``path`` atomically and durably; returns ``path``.

    Raises :class:`NonFiniteError` (naming the first bad value, before anything is
    written) when ``check_finite`` and a float is NaN or infinite; ``TypeError`` for a
    value weights_only loading could not read back; ``OSError`` naming the path and the
    errno when the write fails, with ``path`` and its previous version untouched.
    """
    path = Path(path)
    if not isinstance(payload, dict):
        raise TypeError(f"checkpoint payload must be a dict, got {type(payload).__name__}")
    _check_plain(payload)
    if check_finite:
        found = _first_nonfinite_leaf(payload)
        if found is not None:
            raise NonFiniteError(f"refusing to save the checkpoint {path}: {_nonfinite_message(*found)}",
                                 found[0], path)
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getbuffer()
    digest = hashlib.sha256(body).hexdigest()
    header = b"%s %d sha256=%s size=%d\n" % (MAGIC, VERSION, digest.encode(), len(body))

    folder = path.parent
    _remove_orphans(folder, path.name)
    tmp = folder / _temp_name(path.name)
    stage = "creating"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            stage = "writing"
            with os.fdopen(fd, "wb") as f:
                f.write(header)
                f.write(body)
                f.flush()
                stage = "syncing"
                os.fsync(f.fileno())
        except BaseException:
            _unlink_quietly(tmp)
            raise
        stage = "replacing"
        try:
            if keep_previous and path.is_file():
                # A hard link keeps the old bytes under the .prev name while `path`
                # still exists, so a crash between the steps leaves both names valid.
                prev = previous_path(path)
                link = folder / _temp_name(prev.name)
                try:
                    os.link(path, link)
                except OSError as e:  # a file system without hard links: keep no previous file
                    if e.errno not in (_errno.EPERM, _errno.EOPNOTSUPP, _errno.ENOTSUP, _errno.EXDEV,
                                       _errno.EMLINK):
                        raise
                else:
                    try:
                        os.replace(link, prev)
                    except BaseException:
                        _unlink_quietly(link)
                        raise
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        stage = "syncing the folder of"
        _fsync_dir(folder)
    except OSError as e:
        where = tmp if stage in ("creating", "writing", "syncing") else path
        kept = f"{path} is unchanged" if path.exists() else "no checkpoint was written"
        raise OSError(e.errno, f"cannot save the checkpoint {path}: {_describe_os_error(e)} while {stage} "
                               f"{where} (removed); {kept}") from e
    return path


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _temp_name(name: str) -> str:
    # Host and pid in the name, so that a later save can tell an orphan (its writer was
    # killed, e.g. kill -9 mid-write) from a file another process is writing right now.
    return f".{name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _remove_orphans(folder: Path, name: str) -> None:
    """Remove temporary files of ``name`` left by dead processes of this host."""
    pattern = re.compile(re.escape(f".{name}.{_host()}.") + r"(\d+)\.[0-9a-f]{8}\.tmp\Z")
    prev_pattern = re.compile(re.escape(f".{previous_path(name).name}.{_host()}.") + r"(\d+)\.[0-9a-f]{8}\.tmp\Z")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for entry in names:
        m = pattern.match(entry) or prev_pattern.match(entry)
        if not m or int(m[1]) == os.getpid():
            continue
        try:
            os.kill(int(m[1]), 0)
        except ProcessLookupError:  # its writer is gone: an orphan
            _unlink_quietly(folder / entry)
        except (PermissionError, OverflowError, OSError):  # alive (another user's) or unknowable: keep it
            pass


def _unlink_quietly(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


# ----------------------------------------------------------------------------- reading


class _Bad(Exception):
    """A reason a file is not a usable checkpoint (the caller adds the path)."""


def _fault(path: Path, reason: str, offer_previous: bool = True) -> CheckpointError:
    msg = f"{path}: {reason}"
    if offer_previous and path.name and not path.is_dir():
        prev = previous_path(path)
        if prev != path and prev.is_file():
            try:
                _read_verified(prev)
            except _Bad:
                msg += f"; the previous checkpoint {prev} is damaged too"
            else:
                msg += f"; the previous checkpoint {prev} is intact: use it instead"
    return CheckpointError(msg, path)


def _read_verified(path: Path) -> bytes:
    """The payload bytes of ``path`` after checking header, size and checksum."""
    try:
        with open(path, "rb") as f:
            head = f.readline(_HEADER_MAX)
            body = f.read()
    except IsADirectoryError:
        raise _Bad("is a folder, not a checkpoint file") from None
    except FileNotFoundError:
        raise _Bad("no such checkpoint file") from None
    except OSError as e:
        raise _Bad(f"cannot read the checkpoint: {_describe_os_error(e)}") from None
    if not head:
        raise _Bad("the checkpoint file is empty (0 bytes)")
    if not head.startswith(MAGIC + b" "):
        if head.startswith(b"PK\x03\x04"):
            why = ("a plain torch.save file, not a tks_kernels checkpoint (no checksum header); "
                   "it cannot be verified, so it is not loaded")
        else:
            why = "not a tks_kernels checkpoint (it does not start with the 'TKS-CHECKPOINT' header)"
        raise _Bad(why)
    if not head.endswith(b"\n"):
        raise _Bad(f"the checkpoint is truncated within its header ({len(head)} bytes)")
    fields = head.rstrip(b"\n").split(b" ")
    try:
        version = int(fields[1])
        info = dict(f.split(b"=", 1) for f in fields[2:])
        digest, size = info[b"sha256"].decode("ascii"), int(info[b"size"])
    except (IndexError, ValueError, KeyError, UnicodeDecodeError):
        raise _Bad(f"the checkpoint header is damaged: {head[:120]!r}") from None
    if version != VERSION:
        raise _Bad(f"checkpoint format version {version}; this tks_kernels reads version {VERSION}")
    if len(body) < size:
        raise _Bad(f"the checkpoint is truncated: {len(body)} of {size} bytes after the header "
                   f"(an interrupted copy or a full disk?)")
    if len(body) > size:
        raise _Bad(f"the checkpoint has {len(body) - size} unexpected bytes after its {size}-byte content")
    if hashlib.sha256(body).hexdigest() != digest:
        raise _Bad("the checkpoint is corrupted: its content does not match the sha256 checksum in its header")
    return body


def verify(path: PathLike) -> None:
    """Raise :class:`CheckpointError` unless ``path`` has a valid header, size and checksum
    (without unpickling it)."""
    try:
        _read_verified(Path(path))
    except _Bad as e:
        raise CheckpointError(f"{path}: {e}", path) from None


def load(path: PathLike, *, map_location: Any = "cpu", required: Sequence[str] = (),
         check_finite: bool = True) -> Dict[str, Any]:
    """Read a file written by :func:`save` -> the payload dict.

    Raises :class:`CheckpointError` (one line, naming ``path``, offering the kept previous
    file when it is intact) for an empty, truncated, corrupted or foreign file, one whose
    content is not plain data, one lacking a key of ``required``, and (``check_finite``)
    one holding a NaN or infinite value (:class:`NonFiniteError`, naming it).
    """
    path = Path(path)
    try:
        body = _read_verified(path)
    except _Bad as e:
        raise _fault(path, str(e)) from None
    if not body.startswith(b"PK\x03\x04"):  # what torch.save writes; anything else is damage
        raise _fault(path, "the checkpoint's content cannot be read: it is not a torch.save archive")
    try:
        payload = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph; the line naming the refused global is the useful one.
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "unsupported" in ln.lower() or "global" in ln.lower()),
                     lines[0] if lines else type(e).__name__)
        raise _fault(path, f"the checkpoint holds objects other than tensors and plain values, so it is not "
                           f"loaded ({first[:200]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, AttributeError, TypeError) as e:
        line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _fault(path, f"the checkpoint's content cannot be read ({type(e).__name__}: {line[:200]})") from None
    if not isinstance(payload, dict):
        raise _fault(path, f"the checkpoint holds a {type(payload).__name__}, not a dict")
    missing = [k for k in required if k not in payload]
    if missing:
        raise _fault(path, f"the checkpoint lacks {', '.join(map(repr, missing))} (it has "
                           f"{', '.join(map(repr, sorted(map(str, payload)))) or 'no keys'})")
    if check_finite:
        found = _first_nonfinite_leaf(payload)
        if found is not None:
            err = _fault(path, f"the checkpoint holds non-finite values: {_nonfinite_message(*found)}")
            raise NonFiniteError(str(err), found[0], path)
    return payload
