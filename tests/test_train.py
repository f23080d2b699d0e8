"""The training command: fused backend against the reference, exact resume, DDP on the
CPU (gloo), and the CLI end to end (metrics.json, the plot)."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

import tks_kernels
from tks_kernels import checkpoint, models, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_CPU = tks_kernels.available_backends()["cpu"][0]
# A tiny, fast configuration: a narrow CNN on 96 digits, 2 epochs of 3 steps.
TINY = ["--model", "cnn", "--width", "0.25", "-T", "3", "--epochs", "2", "--batch-size", "32",
        "--limit-train", "96", "--limit-test", "64", "--no-progress", "--seed", "1"]


def _weights(path):
    return checkpoint.load(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.skipif(not HAS_CPU, reason="the C++ extension is not built")
def test_fused_training_matches_reference_step_by_step():
    from tks_kernels.loss import TKSLoss

    losses = {}
    final = {}
    for backend in ("torch", "cpu"):
        torch.manual_seed(0)
        model = models.create("resnet19", num_classes=10, in_channels=3, T=2, width=1 / 16, backend=backend)
        criterion = TKSLoss(alpha=0.7, schedule="static", backend=backend)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
        g = torch.Generator().manual_seed(0)
        out = []
        for step in range(6):
            x = torch.randn(8, 3, 16, 16, generator=g)
            y = torch.randint(0, 10, (8,), generator=g)
            loss = criterion(model(x), y, epoch=step)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[backend], final[backend] = out, model.state_dict()
    assert losses["cpu"] == pytest.approx(losses["torch"], rel=1e-4, abs=1e-5)
    for k, v in final["torch"].items():
        torch.testing.assert_close(final["cpu"][k], v, rtol=1e-3, atol=1e-4, msg=lambda m: f"{k}: {m}")


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    full = train.run(TINY + ["--out", str(tmp_path / "full")])
    stopped = train.run(TINY + ["--out", str(tmp_path / "part"), "--stop-after", "1"])
    assert stopped.stopped and len(stopped.metrics["history"]) == 1
    assert not (tmp_path / "part" / train.METRICS).exists()
    resumed = train.run(["--resume", str(tmp_path / "part"), "--no-progress"])
    assert not resumed.stopped
    assert_same_weights(_weights(tmp_path / "full" / train.CHECKPOINT), _weights(tmp_path / "part" / train.CHECKPOINT))
    full_ckpt = checkpoint.load(tmp_path / "full" / train.CHECKPOINT)
    part_ckpt = checkpoint.load(tmp_path / "part" / train.CHECKPOINT)
    assert full_ckpt["scheduler"] == part_ckpt["scheduler"]
    for sa, sb in zip(full_ckpt["optimizer"]["state"].values(), part_ckpt["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert [h["train_loss"] for h in resumed.metrics["history"]] == [h["train_loss"] for h in full.metrics["history"]]
    assert resumed.metrics["accuracy_by_T"] == full.metrics["accuracy_by_T"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out, argv):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        result = train.run(argv + ["--out", out])
        torch.save(result.models["tks"].state_dict(), os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_two_processes_keep_identical_weights(tmp_path):
    out = str(tmp_path / "ddp")
    os.makedirs(out)
    argv = TINY + ["--loss", "tks", "--backend", "cpu" if HAS_CPU else "torch"]
    mp.spawn(_ddp_worker, args=(2, _free_port(), out, argv), nprocs=2, join=True)
    r0, r1 = torch.load(os.path.join(out, "rank0.pt")), torch.load(os.path.join(out, "rank1.pt"))
    assert_same_weights(r0, r1)
    # rank 0 wrote the outputs; the test accuracy counts every test sample once
    assert_same_weights(r0, _weights(os.path.join(out, train.CHECKPOINT)))
    metrics = json.loads(open(os.path.join(out, train.METRICS)).read())
    assert metrics["test_samples"] == 64
    for acc in metrics["accuracy_by_T"].values():
        assert (acc * 64) == pytest.approx(round(acc * 64))


def test_cli_end_to_end_writes_metrics_and_plot(tmp_path):
    out = tmp_path / "cli"
    # The tks_kernels this test imported (installed, or the source tree), and its command.
    where = os.path.dirname(os.path.dirname(os.path.abspath(tks_kernels.__file__)))
    env = dict(os.environ, PYTHONPATH=where + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = os.path.join(os.path.dirname(sys.executable), "tks-train")
    command = [script] if os.path.isfile(script) else [sys.executable, "-m", "tks_kernels.train"]
    proc = subprocess.run([*command, *TINY, "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy by T" in proc.stdout
    metrics = json.loads((out / train.METRICS).read_text())
    assert set(metrics["accuracy_by_T"]) == {"1", "2", "3"}
    assert metrics["final_accuracy"] == metrics["accuracy_by_T"]["3"]
    assert all(0.0 <= a <= 1.0 for a in metrics["accuracy_by_T"].values())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert (out / train.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / train.CHECKPOINT).is_file()


def test_compare_writes_both_losses(tmp_path):
    out = tmp_path / "cmp"
    result = train.run(TINY + ["--compare", "--epochs", "1", "--out", str(out)])
    metrics = json.loads((out / train.METRICS).read_text())
    assert metrics["compare"] == ["ce", "tks"]
    assert metrics["final_accuracy"] == metrics["tks"]["final_accuracy"]
    assert metrics["accuracy_by_T"] == metrics["tks"]["accuracy_by_T"]
    assert set(metrics["ce"]["accuracy_by_T"]) == {"1", "2", "3"}
    assert (out / train.PLOT).is_file() and (out / "ce" / train.CHECKPOINT).is_file()
    # same seed: both runs start from the same weights, so the first loss differs only by the loss
    assert set(result.models) == {"ce", "tks"}


def test_amp_bf16_and_tet_run(tmp_path):
    result = train.run(TINY + ["--epochs", "1", "--amp", "--loss", "tet", "--out", str(tmp_path / "amp")])
    assert 0.0 <= result.metrics["final_accuracy"] <= 1.0
    assert torch.isfinite(torch.tensor(result.metrics["history"][0]["train_loss"]))


def test_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(SystemExit):
        train.run(["--model", "resnet20"])
    with pytest.raises(SystemExit, match="no checkpoint"):
        train.run(["--resume", str(tmp_path / "nothing")])


def test_lr_schedule_warms_up_then_follows_a_cosine():
    f = train._lr_lambda(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert all(f(i) >= f(i + 1) for i in range(10, 100))


def _write_fake_cifar10(folder, per_file=4):
    import pickle

    import numpy as np

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_file)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def _write_fake_cifar10_dvs(root, per_class=2, n=60):
    """AER-DAT 2.0 files as CIFAR10-DVS stores them (big-endian address, timestamp)."""
    import numpy as np

    from tks_kernels.data import events

    rng = np.random.default_rng(0)
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
    for c in events.CIFAR10_DVS_CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            x, y, p = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
            addr = ((127 - x) << 8) | ((127 - y) << 1) | (1 - p)
            body = np.stack([addr, np.sort(rng.integers(0, 10**6, n))], axis=1).astype(">u4").tobytes()
            (root / c / f"cifar10_{c}_{i}.aedat").write_bytes(header + body)


def _run_script(name, argv, monkeypatch):
    import runpy

    monkeypatch.setattr(sys, "argv", [name, *argv])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(os.path.join(REPO, "python", name), run_name="__main__")
    assert exit_.value.code in (0, None)


QUICK = ["--epochs", "1", "--batch-size", "4", "--width", "0.0625", "--no-progress", "--workers", "0"]


def test_paper_scripts_run_on_tiny_fake_data(tmp_path, monkeypatch):
    _write_fake_cifar10(tmp_path / "cifar" / "cifar-10-batches-py")
    _run_script("cifar10_resnet19_tks.py", [str(tmp_path / "cifar"), *QUICK, "--limit-train", "8",
                                           "--out", str(tmp_path / "c10")], monkeypatch)
    metrics = json.loads((tmp_path / "c10" / train.METRICS).read_text())
    assert metrics["model"] == "resnet19" and metrics["T"] == 4 and set(metrics["accuracy_by_T"]) == {"1", "2", "3", "4"}
    assert metrics["args"]["alpha"] == 0.7 and metrics["args"]["temperature"] == 3.0
    assert metrics["args"]["weight_decay"] == 0.01

    _write_fake_cifar10_dvs(tmp_path / "dvs")
    _run_script("cifar10dvs_vggsnn_tks.py", [str(tmp_path / "dvs"), *QUICK, "--data-option", "progress=False",
                                             "--data-option", "test_fraction=0.5", "--out", str(tmp_path / "d")],
                monkeypatch)
    metrics = json.loads((tmp_path / "d" / train.METRICS).read_text())
    assert metrics["model"] == "vggsnn" and metrics["T"] == 10 and len(metrics["accuracy_by_T"]) == 10
    assert metrics["test_samples"] == 10
