"""The training command: fused backend against the reference, exact resume, DDP on the
CPU (gloo), and the CLI end to end (metrics.json, the plot)."""
import json
import math
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
TINY = ["--data", "digits", "--model", "cnn", "--width", "0.25", "-T", "3", "--epochs", "2", "--batch-size", "32",
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


def test_lr_schedule_is_timms_cosine_per_epoch():
    import argparse

    base = 5e-3 * 128 / 1024
    args = argparse.Namespace(epochs=600, schedule_epochs=600, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5,
                              lr_interval="epoch")
    model = torch.nn.Linear(3, 2)
    opt = train.build_optimizer(model, base, 0.01)
    sched = train.build_scheduler(opt, args, base, steps_per_epoch=4)
    lrs = []
    for _ in range(600 * 4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    per_epoch = lrs[::4]
    assert all(lrs[4 * e:4 * e + 4] == [per_epoch[e]] * 4 for e in range(600))  # stepped per epoch
    assert per_epoch[0] == pytest.approx(1e-6, rel=1e-9)                        # warm-up start
    assert per_epoch[4] == pytest.approx(1e-6 + 4 * (base - 1e-6) / 5, rel=1e-9)
    cos = lambda t: 1e-5 + 0.5 * (base - 1e-5) * (1 + math.cos(math.pi * t / 600))  # noqa: E731
    assert per_epoch[5] == pytest.approx(cos(5), rel=1e-9)                     # end of warm-up
    assert per_epoch[599] == pytest.approx(cos(599), rel=1e-9)                 # last epoch
    assert per_epoch[599] > 1e-5 and train.cosine_lr(600, base, 600, 5, 1e-6, 1e-5) == 1e-5  # the floor
    assert all(a >= b for a, b in zip(per_epoch[5:], per_epoch[6:]))
    # per step, from 0 to 0: the other option
    step = argparse.Namespace(**{**vars(args), "lr_interval": "step", "warmup_lr": 0.0, "min_lr": 0.0})
    opt = train.build_optimizer(model, base, 0.01)
    sched = train.build_scheduler(opt, step, base, steps_per_epoch=4)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(base * 0.25 / 5)


def test_optimizer_puts_no_decay_on_1d_parameters_and_biases():
    model = models.create("resnet19", num_classes=10, in_channels=3, T=2, width=1 / 16)
    opt = train.build_optimizer(model, 1e-3, 0.01)
    no_decay, decay = opt.param_groups
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim <= 1 for p in no_decay["params"]) and all(p.ndim > 1 for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} == {n for n, p in model.named_parameters()
                                                         if p.ndim == 1 or n.endswith(".bias")}
    assert len(no_decay["params"]) + len(decay["params"]) == len(list(model.parameters()))
    assert any(names[id(p)].endswith("head.2.0.bias") for p in no_decay["params"])
    everything = train.build_optimizer(model, 1e-3, 0.01, decay_1d=True)
    assert len(everything.param_groups) == 1 and everything.param_groups[0]["weight_decay"] == 0.01


def test_static_schedule_is_alpha_ce_plus_one_minus_alpha_soft():
    from tks_kernels.loss import TKSLoss

    g = torch.Generator().manual_seed(3)
    o, y = torch.randn(4, 6, 10, generator=g, dtype=torch.float64), torch.randint(0, 10, (6,), generator=g)
    parts = TKSLoss(alpha=0.7, schedule="static", backend="torch")(o, y, return_parts=True)
    # the authors' train_main.py with --staticalpha: current_alpha*loss1 + (1-current_alpha)*loss2
    assert float(parts.loss) == pytest.approx(float(0.7 * parts.ce + 0.3 * parts.soft), rel=1e-12)
    ce = torch.nn.functional.cross_entropy(o.mean(0), y)
    assert float(parts.ce) == pytest.approx(float(ce), rel=1e-12) and parts.lam == pytest.approx(0.3)
    # their default: current_alpha = 1 - epoch/epochs*alpha on CE, the rest on the soft loss
    linear = TKSLoss(alpha=0.7, schedule="linear", epochs=10, backend="torch")
    assert linear.lam(4) == pytest.approx(1 - (1 - 4 / 10 * 0.7))


def test_one_pass_accuracy_by_T_equals_separate_runs_for_every_model():
    import argparse

    from tks_kernels.train.distributed import Dist
    from tks_kernels.train.evaluate import evaluate

    args = argparse.Namespace(amp=False, channels_last=False)
    shapes = {"mlp": (1, 8, 8), "cnn": (1, 8, 8), "vgg11": (2, 32, 32), "vggsnn": (2, 16, 16),
              "resnet19": (3, 16, 16), "sew_resnet18": (3, 32, 32), "sew_resnet34": (3, 32, 32)}
    for name in models.MODELS:
        c, h, w = shapes[name]
        torch.manual_seed(0)
        kw = dict(input_size=(h, w)) if name != "resnet19" and not name.startswith("sew") else {}
        model = models.create(name, num_classes=4, in_channels=c, T=3, width=1 if name == "mlp" else 1 / 8, **kw)
        model.train()
        with torch.no_grad():  # trained BN statistics, so the outputs differ across T
            for _ in range(3):
                model(torch.rand(8, c, h, w) * 3)
        for is_event in (False, True):
            x = torch.rand(24, 5, c, h, w) * 3 if is_event else torch.rand(24, c, h, w) * 3
            y = torch.randint(0, 4, (24,))
            loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=12)
            steps = [1, 2, 3, 4, 5]
            one = evaluate(model, loader, steps, is_event, torch.device("cpu"), args, Dist())
            separate = {t: evaluate(model, loader, [t], is_event, torch.device("cpu"), args, Dist())[t]
                        for t in steps}
            assert one == separate, (name, is_event)
            with torch.no_grad():  # and the per-step logits themselves: a causal model
                model.eval()
                full = model(x[:4].transpose(0, 1)) if is_event else model(x[:4], T=5)
                for t in (1, 3):
                    part = model(x[:4].transpose(0, 1)[:t]) if is_event else model(x[:4], T=t)
                    torch.testing.assert_close(full[:t], part, rtol=1e-5, atol=1e-5)


def test_resume_of_a_finished_run_says_so_and_extending_is_explicit(tmp_path, capsys):
    out = tmp_path / "run"
    train.run(TINY + ["--epochs", "1", "--out", str(out)])
    metrics = (out / train.METRICS).read_bytes()
    ckpt = (out / train.CHECKPOINT).read_bytes()
    again = train.run(["--resume", str(out), "--no-progress"])
    assert "is a finished run (1 of 1 epochs)" in capsys.readouterr().out
    assert (out / train.METRICS).read_bytes() == metrics and (out / train.CHECKPOINT).read_bytes() == ckpt
    assert again.metrics == json.loads(metrics)
    more = train.run(["--resume", str(out), "--no-progress", "--extend-epochs", "1"])
    assert [h["epoch"] for h in more.metrics["history"]] == [1, 2]
    assert more.metrics["args"]["schedule_epochs"] == 1 and more.metrics["args"]["epochs"] == 2
    assert more.metrics["history"][1]["lr"] == pytest.approx(1e-5)  # past the schedule: the floor
    with pytest.raises(SystemExit, match="--extend-epochs continues a run"):
        train.run(TINY + ["--extend-epochs", "1"])


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


def _has(module):
    try:
        __import__(module)
        return True
    except Exception:
        return False


def test_paper_scripts_run_on_tiny_fake_data(tmp_path, monkeypatch):
    _write_fake_cifar10(tmp_path / "cifar" / "cifar-10-batches-py")
    c10 = [str(tmp_path / "cifar"), *QUICK, "--limit-train", "8", "--out", str(tmp_path / "c10")]
    if not (_has("timm") and _has("torchvision")):
        # The recipe's RandAugment comes from timm: without it the command says what is missing.
        import runpy

        monkeypatch.setattr(sys, "argv", ["cifar10_resnet19_tks.py", *c10])
        with pytest.raises(SystemExit, match="needs timm, torchvision and Pillow; missing or broken: .*timm"):
            runpy.run_path(os.path.join(REPO, "python", "cifar10_resnet19_tks.py"), run_name="__main__")
        c10 += ["--data-option", "augment_policy=crop_flip"]
    _run_script("cifar10_resnet19_tks.py", c10, monkeypatch)
    metrics = json.loads((tmp_path / "c10" / train.METRICS).read_text())
    assert metrics["model"] == "resnet19" and metrics["T"] == 4 and set(metrics["accuracy_by_T"]) == {"1", "2", "3", "4"}
    a = metrics["args"]
    assert (a["alpha"], a["temperature"], a["schedule"], a["weight_decay"]) == (0.7, 3.0, "linear", 0.01)
    assert (a["warmup_lr"], a["min_lr"], a["lr_interval"], a["decay_1d"]) == (1e-6, 1e-5, "epoch", False)

    _write_fake_cifar10_dvs(tmp_path / "dvs")
    _run_script("cifar10dvs_vggsnn_tks.py", [str(tmp_path / "dvs"), *QUICK, "--data-option", "progress=False",
                                             "--data-option", "test_fraction=0.5", "--out", str(tmp_path / "d")],
                monkeypatch)
    metrics = json.loads((tmp_path / "d" / train.METRICS).read_text())
    assert metrics["model"] == "vggsnn" and metrics["T"] == 10 and len(metrics["accuracy_by_T"]) == 10
    assert metrics["test_samples"] == 10
    assert metrics["args"]["data_option"] == dict(frames_by="time", resize_mode="align_corners",
                                                  augment_policy="crop_flip_rotate", split="ordered",
                                                  progress=False, test_fraction=0.5)


def test_tks_eval_tests_a_checkpoint_at_any_T(tmp_path, capsys):
    from tks_kernels.train import tks_eval

    out = tmp_path / "run"
    trained = train.run(TINY + ["--out", str(out)])
    before = (out / train.METRICS).read_bytes()
    from tks_kernels.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(out / train.CHECKPOINT)
    assert ckpt["model_config"]["name"] == "cnn" and ckpt["model_config"]["in_channels"] == 1
    assert ckpt["model_config"]["options"] == {"input_size": [8, 8], "width": 0.25}
    assert ckpt["model_config"]["neuron"]["fire_at_threshold"] is False
    metrics = tks_eval.run([str(out), "-T", "1", "2", "3", "6", "--limit-test", "64"])
    assert set(metrics["accuracy_by_T"]) == {"1", "2", "3", "6"}
    for t in ("1", "2", "3"):  # the same model and test set as training's last evaluation
        assert metrics["accuracy_by_T"][t] == trained.metrics["accuracy_by_T"][t]
    assert metrics["trained_T"] == 3 and metrics["epoch"] == 2 and metrics["test_samples"] == 64
    assert json.loads((out / "eval" / train.METRICS).read_text()) == metrics
    assert (out / "eval" / train.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / train.METRICS).read_bytes() == before  # the run's own metrics are left alone
    assert "test accuracy by T" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="tks-eval: no checkpoint at"):
        tks_eval.run([str(tmp_path / "nothing")])
    with pytest.raises(SystemExit, match="-T takes positive numbers"):
        tks_eval.run([str(out), "-T", "0"])


def test_digits_spikes_are_bernoulli_trains_with_a_fixed_test_set():
    from tks_kernels import data

    train_set = data.create("digits_spikes", T=5)
    test_set = data.create("digits_spikes", T=5, train=False)
    longer = data.create("digits_spikes", T=7, train=False)
    assert len(train_set) == 1438 and len(test_set) == 4 * 359 and test_set.distinct_samples == 359
    x, y = test_set[0]
    assert x.shape == (5, 1, 8, 8) and set(x.unique().tolist()) <= {0.0, 1.0} and y.dtype == torch.int64
    assert torch.equal(longer[0][0][:5], x)  # the first steps do not depend on T
    assert torch.equal(data.create("digits_spikes", T=5, train=False)[3][0], test_set[3][0])
    torch.manual_seed(0)
    a = train_set[0][0]
    assert not torch.equal(a, train_set[0][0])  # fresh spikes at every access
    # spike rate = min(1, gain * intensity)
    many = torch.stack([train_set[10][0] for _ in range(400)]).mean((0, 1))
    want = (data.create("digits", split_seed=0)[10][0] * 0.6).clamp(max=1.0)
    torch.testing.assert_close(many, want, atol=0.08, rtol=0)
    with pytest.raises(ValueError, match="gain must be a number > 0"):
        data.create("digits_spikes", gain=0)


def test_seeds_and_compare_report_mean_and_spread(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["--data", "digits_spikes", "-T", "3", "--epochs", "1", "--limit-train", "64", "--limit-test", "48",
            "--seeds", "2", "--no-progress", "--out", str(out)]
    result = train.run(argv)
    m = result.metrics
    assert m["compare"] == ["ce", "tks"] and m["seeds"] == [0, 1]
    for name in ("ce", "tks"):
        runs = m[name]["runs"]
        assert [r["args"]["seed"] for r in runs] == [0, 1] and all(r["loss"] == name for r in runs)
        for t in ("1", "2", "3"):
            accs = [r["accuracy_by_T"][t] for r in runs]
            assert m[name]["accuracy_by_T"][t] == pytest.approx(sum(accs) / 2)
            assert m[name]["accuracy_by_T_std"][t] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2))
        for seed in (0, 1):
            assert (out / name / f"seed{seed}" / train.CHECKPOINT).is_file()
            assert (out / name / f"seed{seed}" / train.METRICS).is_file()
    assert m["accuracy_by_T"] == m["tks"]["accuracy_by_T"]
    printed = capsys.readouterr().out
    assert "tks - ce" in printed and "mean and spread over seeds 0..1" in printed and "±" in printed
    assert (out / train.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one (loss, seed) resumes as a single run
    again = train.run(["--resume", str(out / "ce" / "seed1"), "--no-progress"])
    assert again.metrics["loss"] == "ce" and again.metrics["args"]["seed"] == 1
    # --loss alone trains one loss (no comparison), as before
    single = train.run(argv[:-2] + ["--loss", "ce", "--seeds", "1", "--out", str(tmp_path / "one")])
    assert "compare" not in single.metrics and (tmp_path / "one" / train.CHECKPOINT).is_file()


def test_tks_eval_on_sequence_data_beyond_the_training_T(tmp_path):
    from tks_kernels.train import tks_eval

    out = tmp_path / "seq"
    trained = train.run(["--data", "digits_spikes", "--loss", "ce", "--seeds", "1", "-T", "3", "--epochs", "1",
                         "--limit-train", "64", "--limit-test", "40", "--no-progress", "--out", str(out)])
    with pytest.raises(SystemExit, match="integrated into 3 frames; pass --frames 6"):
        tks_eval.run([str(out), "-T", "1", "6"])
    metrics = tks_eval.run([str(out), "-T", "1", "2", "3", "6", "--frames", "6", "--limit-test", "40"])
    assert metrics["frames"] == 6 and set(metrics["accuracy_by_T"]) == {"1", "2", "3", "6"}
    # the first 3 of 6 fixed test frames are the training-T test frames: the same accuracies
    for t in ("1", "2", "3"):
        assert metrics["accuracy_by_T"][t] == trained.metrics["accuracy_by_T"][t]
