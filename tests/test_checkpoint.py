"""tks_kernels.checkpoint: every damaged, foreign or crafted file is refused with one line
naming it; nothing non-finite or unloadable is written; a failed write (a full disk)
leaves the previous checkpoint byte-identical and no temporary file."""
import errno
import hashlib
import io
import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tks_kernels import checkpoint as ck


def payload(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    model = {"fc.weight": torch.randn(n, 4, generator=g), "fc.bias": torch.randn(n, generator=g),
             "bn.num_batches_tracked": torch.tensor(3)}
    return {"model": model, "optimizer": {"state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.randn(n, 4, generator=g)}},
                                          "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1]}]},
            "epoch": 2, "rng": [{"torch": torch.arange(16, dtype=torch.uint8), "python": [3, list(range(5)), None]}],
            "args": {"lr": None, "neuron": {"tau": 2.0}, "data_option": {"size": (48, 48)}, "name": "x"},
            "meta": {"nested": {"deeper": [1, 2.5, "s", None, True, torch.float16]}}}


def assert_equal_nested(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_equal_nested(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_equal_nested(x, y)
    else:
        assert a == b and type(a) is type(b)


def temp_files(folder):
    return [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_round_trip_of_plain_nested_dicts(tmp_path):
    p = payload()
    ck.save(tmp_path / "c.pt", p)
    assert_equal_nested(p, ck.load(tmp_path / "c.pt"))
    assert temp_files(tmp_path) == []
    # The header names the format and checksums what follows.
    head, body = (tmp_path / "c.pt").read_bytes().split(b"\n", 1)
    assert head.startswith(b"TKS-CHECKPOINT 1 sha256=") and hashlib.sha256(body).hexdigest().encode() in head


def test_previous_file_is_kept_and_offered_when_the_new_one_is_damaged(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ck.save(path, payload(0))
    first = path.read_bytes()
    ck.save(path, payload(1))
    prev = tmp_path / "checkpoint.prev.pt"
    assert prev.read_bytes() == first
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError) as e:
        ck.load(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "corrupted" in msg
    assert f"the previous checkpoint {prev} is intact" in msg
    assert_equal_nested(payload(0), ck.load(prev))


def test_every_overwritten_byte_is_refused(tmp_path):
    """Bytes overwritten in place anywhere (header, tensor data, zip records) are refused,
    never loaded as different values."""
    path = tmp_path / "c.pt"
    ck.save(path, payload(n=8), keep_previous=False)
    good = path.read_bytes()
    rng = np.random.default_rng(0)
    positions = sorted(set(range(0, 120)) | set(rng.integers(0, len(good), 300).tolist()))
    for pos in positions:
        data = bytearray(good)
        data[pos] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(data))
        with pytest.raises(ck.CheckpointError, match="c.pt: ") as e:
            ck.load(path)
        assert "\n" not in str(e.value), pos


@pytest.mark.parametrize("kind, match", [
    ("empty", "empty"), ("random", "not a tks_kernels checkpoint"), ("truncated", "truncated"),
    ("header_only", "truncated"), ("cut_header", "truncated within its header"), ("plain_torch", "plain torch.save"),
    ("folder", "folder"), ("missing", "no such"), ("bad_version", "version 7"), ("not_a_dict", "not a dict"),
    ("garbage_body", "cannot be read"), ("extra_bytes", "unexpected bytes"),
])
def test_malformed_files_give_one_line_naming_the_file(tmp_path, kind, match):
    path = tmp_path / "c.pt"
    ck.save(path, payload(), keep_previous=False)
    good = path.read_bytes()
    head, body = good.split(b"\n", 1)

    def framed(body_bytes, version=1):
        return b"TKS-CHECKPOINT %d sha256=%s size=%d\n" % (
            version, hashlib.sha256(body_bytes).hexdigest().encode(), len(body_bytes)) + body_bytes

    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "header_only":
        path.write_bytes(head + b"\n")
    elif kind == "cut_header":
        path.write_bytes(head[:40])
    elif kind == "plain_torch":
        torch.save(payload(), path)
    elif kind == "folder":
        path.unlink()
        path.mkdir()
    elif kind == "missing":
        path.unlink()
    elif kind == "bad_version":
        path.write_bytes(framed(body, version=7))
    elif kind == "not_a_dict":
        buf = io.BytesIO()
        torch.save([torch.zeros(2)], buf)
        path.write_bytes(framed(buf.getvalue()))
    elif kind == "garbage_body":
        path.write_bytes(framed(np.random.default_rng(1).bytes(3000)))
    elif kind == "extra_bytes":
        path.write_bytes(good + b"more")
    with pytest.raises(ck.CheckpointError, match=match) as e:
        ck.load(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    assert e.value.path == path


def test_missing_keys_are_named(tmp_path):
    ck.save(tmp_path / "c.pt", {"model": {}})
    with pytest.raises(ck.CheckpointError, match=r"lacks 'optimizer', 'epoch' \(it has 'model'\)"):
        ck.load(tmp_path / "c.pt", required=("model", "optimizer", "epoch"))


class _WritesAFile:
    """Unpickling this runs os.system: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoints_do_not_run_code(tmp_path):
    marker = tmp_path / f"ran-{uuid.uuid4().hex}"
    # Once with our header and a correct checksum (the checksum is no signature), once a
    # plain torch.save file as the old format was.
    buf = io.BytesIO()
    torch.save({"model": _WritesAFile(marker)}, buf)
    body = buf.getvalue()
    framed = tmp_path / "framed.pt"
    framed.write_bytes(b"TKS-CHECKPOINT 1 sha256=%s size=%d\n" % (hashlib.sha256(body).hexdigest().encode(),
                                                                    len(body)) + body)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(body)
    with pytest.raises(ck.CheckpointError, match="framed.pt: the checkpoint holds objects other than tensors.*posix"
                                                 "|framed.pt: the checkpoint holds objects other than tensors"):
        ck.load(framed)
    with pytest.raises(ck.CheckpointError, match="plain.pt: a plain torch.save file"):
        ck.load(plain)
    assert not marker.exists()
    # The same bytes do run code when loaded the unsafe way: the test would catch a regression.
    torch.load(io.BytesIO(body), weights_only=False)
    assert marker.exists()


POISON = {
    "model.fc.weight": lambda p, v: p["model"]["fc.weight"].view(-1).__setitem__(5, v),
    "optimizer.state.0.exp_avg": lambda p, v: p["optimizer"]["state"][0]["exp_avg"].view(-1).__setitem__(5, v),
    "meta.nested.deeper.1": lambda p, v: p["meta"]["nested"]["deeper"].__setitem__(1, v),
}


@pytest.mark.parametrize("where", list(POISON))
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_never_saved_and_never_loaded(tmp_path, where, value):
    path = tmp_path / "c.pt"
    ck.save(path, payload(0))
    before = path.read_bytes()
    bad = payload(1)
    POISON[where](bad, value)
    with pytest.raises(ck.NonFiniteError, match=f"refusing to save the checkpoint {path}: {where}") as e:
        ck.save(path, bad)
    assert e.value.key == where
    assert path.read_bytes() == before and temp_files(tmp_path) == []
    # A file holding one (written without the check, e.g. by hand) is refused on load.
    ck.save(tmp_path / "n.pt", bad, check_finite=False)
    with pytest.raises(ck.NonFiniteError, match=f"n.pt: the checkpoint holds non-finite values: {where}"):
        ck.load(tmp_path / "n.pt")
    assert ck.load(tmp_path / "n.pt", check_finite=False) is not None


@pytest.mark.parametrize("value, name", [(np.zeros(3), "numpy.ndarray"), (np.float32(1.0), "numpy.float32"),
                                         (b"", "builtins.bytes"),
                                         (object(), "builtins.object"), (type, "builtins.type")])
def test_values_weights_only_cannot_read_are_refused_before_writing(tmp_path, value, name):
    with pytest.raises(TypeError, match=f"args.x.0 is a {name}"):
        ck.save(tmp_path / "c.pt", {"args": {"x": [value]}})
    assert os.listdir(tmp_path) == []


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**62, 2**62) | st.floats(allow_nan=False,
                                                                                        allow_infinity=False)
                    | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3) | st.integers(0, 9), c,
                                                                        max_size=3),
                    max_leaves=12))
def test_any_plain_structure_round_trips(tmp_path_factory, tree):
    path = tmp_path_factory.mktemp("rt") / "c.pt"
    ck.save(path, {"tree": tree, "t": torch.arange(3.0)})
    assert_equal_nested({"tree": tree, "t": torch.arange(3.0)}, ck.load(path))


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch, failing):
    path = tmp_path / "checkpoint.pt"
    ck.save(path, payload(0))
    ck.save(path, payload(1))
    before, prev_before = path.read_bytes(), (tmp_path / "checkpoint.prev.pt").read_bytes()

    def fail(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if failing == "write":
        real_fdopen = os.fdopen

        class Full(io.FileIO):
            def write(self, b):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(ck.os, "fdopen", lambda fd, mode: Full(fd, "wb"))
        assert real_fdopen
    elif failing == "fsync":
        monkeypatch.setattr(ck.os, "fsync", fail)
    else:
        monkeypatch.setattr(ck.os, "replace", fail)
    with pytest.raises(OSError) as e:
        ck.save(path, payload(2))
    assert e.value.errno == errno.ENOSPC
    msg = str(e.value)
    assert str(path) in msg and "ENOSPC" in msg and "errno 28" in msg and "is unchanged" in msg
    monkeypatch.undo()
    assert path.read_bytes() == before and (tmp_path / "checkpoint.prev.pt").read_bytes() == prev_before
    assert temp_files(tmp_path) == []


def test_interrupt_during_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ck.save(path, payload(0))
    before = path.read_bytes()

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        ck.save(path, payload(1))
    monkeypatch.undo()
    assert path.read_bytes() == before and temp_files(tmp_path) == []


def _is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.skipif(not _is_root() or not shutil.which("mount"), reason="mounting a tmpfs needs root")
def test_full_disk_keeps_the_previous_checkpoint_byte_identical(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        path = disk / "checkpoint.pt"
        ck.save(path, {"model": {"w": torch.zeros(4000)}})  # about 16 KB
        ck.save(path, {"model": {"w": torch.ones(4000)}})
        before, prev_before = path.read_bytes(), (disk / "checkpoint.prev.pt").read_bytes()
        with pytest.raises(OSError) as e:
            ck.save(path, {"model": {"w": torch.ones(100_000)}})  # 400 KB: does not fit
        assert e.value.errno == errno.ENOSPC
        assert str(path) in str(e.value) and "ENOSPC" in str(e.value)
        assert path.read_bytes() == before and (disk / "checkpoint.prev.pt").read_bytes() == prev_before
        assert temp_files(disk) == [] and sorted(os.listdir(disk)) == ["checkpoint.prev.pt", "checkpoint.pt"]
        assert torch.equal(ck.load(path)["model"]["w"], torch.ones(4000))
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_first_nonfinite_syncs_once_and_names_in_order():
    obj = {"a": torch.zeros(3), "b": [torch.ones(2), torch.tensor([1.0, float("nan")])],
           "c": torch.tensor([float("inf")]), "i": torch.tensor([7])}
    assert ck.first_nonfinite(obj) == "b.1"
    assert ck.first_nonfinite({"a": torch.zeros(2), "n": 3, "s": "x"}) is None
    assert ck.first_nonfinite({"x": [1.0, float("-inf")]}) == "x.1"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_a_temporary_file_of_a_killed_writer_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "checkpoint.pt"
    # A writer killed mid-write (kill -9) leaves its temporary file; a live one's stays.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = ck._host()
    orphan = tmp_path / f".checkpoint.pt.{host}.{dead_pid}.0123abcd.tmp"
    orphan.write_bytes(b"partial")
    alive = tmp_path / f".checkpoint.pt.{host}.{os.getppid()}.0123abcd.tmp"
    alive.write_bytes(b"being written")
    other_host = tmp_path / f".checkpoint.pt.elsewhere.{dead_pid}.0123abcd.tmp"
    other_host.write_bytes(b"another machine's")
    ck.save(path, payload())
    assert not orphan.exists() and alive.exists() and other_host.exists()
