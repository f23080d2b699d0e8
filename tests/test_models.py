"""The model zoo: shapes, every backend against the reference, channels_last, torch.compile."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

import tks_kernels
from tks_kernels import models
from tks_kernels.models import PAPER_NEURON, TdBatchNorm2d

BACKENDS = [name for name, (ok, _) in tks_kernels.available_backends().items() if ok]
FAST = [b for b in BACKENDS if b != "triton"]  # the Triton interpreter is slow: smallest models only
SMALLEST = ("mlp", "cnn")

# name -> (create kwargs, input shape); sequences are [T, B, C, H, W], static inputs [B, C, H, W]
TINY = {
    "mlp": (dict(in_channels=1, input_size=8), (3, 1, 8, 8)),
    "cnn": (dict(in_channels=1, input_size=8, width=0.25), (3, 1, 8, 8)),
    "vgg11": (dict(in_channels=2, input_size=32, width=1 / 16), (2, 2, 2, 32, 32)),
    "vggsnn": (dict(in_channels=2, input_size=16, width=1 / 16), (2, 2, 2, 16, 16)),
    "resnet19": (dict(in_channels=3, width=1 / 16), (2, 3, 16, 16)),
    "sew_resnet18": (dict(in_channels=3, width=1 / 8), (1, 3, 32, 32)),
    "sew_resnet34": (dict(in_channels=3, width=1 / 8), (1, 3, 32, 32)),
}
T = 2


def build(name, backend="torch", T=T, seed=0, **extra):
    kw, shape = TINY[name]
    torch.manual_seed(seed)
    return models.create(name, num_classes=5, T=T, backend=backend, **kw, **extra), shape


def loss_and_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits.mean(0), y)
    loss.backward()
    # (a compiled model names its parameters "_orig_mod.<name>")
    return logits.detach(), loss.detach(), {n.removeprefix("_orig_mod."): p.grad.clone()
                                            for n, p in model.named_parameters() if p.grad is not None}


def _cases():
    for name in TINY:
        for backend in BACKENDS:
            if backend == "triton" and name not in SMALLEST:
                continue
            yield name, backend


@pytest.mark.parametrize("name,backend", list(_cases()))
def test_forward_backward_matches_reference(name, backend):
    ref, shape = build(name, "torch")
    model, _ = build(name, backend)
    x = torch.rand(shape) * 2
    B = shape[1] if len(shape) == 5 else shape[0]
    y = torch.arange(B) % 5
    logits_ref, loss_ref, grads_ref = loss_and_grads(ref, x, y)
    logits, loss, grads = loss_and_grads(model, x, y)
    assert logits.shape == (T, B, 5)
    assert torch.isfinite(loss)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_ref.keys() and len(grads) == len(list(model.parameters()))
    for n in grads:
        torch.testing.assert_close(grads[n], grads_ref[n], rtol=1e-4, atol=1e-5, msg=lambda m: f"{n}: {m}")


def test_every_neuron_is_the_papers_and_gets_the_backend():
    model, _ = build("resnet19", "cpu" if "cpu" in BACKENDS else "torch")
    lifs = [m for m in model.modules() if isinstance(m, tks_kernels.LIF)]
    # stem, 2 per block (3 + 3 + 2 blocks), one in the head
    assert len(lifs) == 1 + 2 * 8 + 1
    for lif in lifs:
        assert lif.step_mode == "m" and lif.backend == model.stem[1].backend
        for key, value in PAPER_NEURON.items():
            assert getattr(lif.cfg, key) == value, key
    assert PAPER_NEURON["fire_at_threshold"] is False  # BrainCog's strict h - V_th > 0
    custom, _ = build("mlp", neuron={"tau": 4.0, "surrogate": "atan"})
    lif = next(m for m in custom.modules() if isinstance(m, tks_kernels.LIF))
    assert lif.tau == 4.0 and lif.surrogate == "atan" and lif.v_threshold == 0.5


def test_static_input_is_repeated_over_T_and_T_can_change():
    model, shape = build("cnn")
    model.eval()
    x = torch.rand(shape)
    seq = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
    torch.testing.assert_close(model(x), model(seq))
    assert model(x, T=1).shape == (1, shape[0], 5)
    assert model(x, T=5).shape == (5, shape[0], 5)
    # the first steps of a longer run are the shorter run (neurons are reset per call)
    torch.testing.assert_close(model(x, T=5)[:2], model(x, T=2))
    with pytest.raises(ValueError, match="static batch"):
        model(x[0])


def test_vggsnn_is_the_tet_architecture():
    model = models.create("vggsnn", num_classes=10, in_channels=2, T=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].in_features == 512 * 3 * 3
    with torch.no_grad():
        assert model(torch.rand(10, 1, 2, 48, 48)).shape == (10, 1, 10)


def test_resnet19_sizes():
    model = models.create("resnet19", num_classes=10, in_channels=3, T=4)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 1 + 2 * 8  # 19 = 17 convolutions + 2 linear layers
    assert all(isinstance(m, TdBatchNorm2d) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # BrainCog's resnet19 for CIFAR-10, as the TKS authors train it
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 12_698_250
    tdbn = models.create("resnet19", num_classes=10, in_channels=3, T=4, style="tdbn")
    assert sum(p.numel() for p in tdbn.parameters()) == 12_698_250 - 256  # no BN-only shortcut


def test_resnet19_is_the_authors_layout_and_init():
    torch.manual_seed(0)
    model = models.create("resnet19", num_classes=10, in_channels=3, T=4)
    s = 1 / math.sqrt(2)
    stem_bn = model.stem[0][1]
    assert stem_bn.alpha == pytest.approx(s) and not stem_bn.fixed_scale
    # layer1[0]: a tdBN-only shortcut with alpha 1/sqrt(2); later blocks of a stage: identity
    short = model.layers[0].downsample
    assert len(short) == 1 and isinstance(short[0], TdBatchNorm2d) and short[0].alpha == pytest.approx(s)
    assert model.layers[1].downsample is None and model.layers[3].downsample is not None
    for m in model.modules():
        if isinstance(m, TdBatchNorm2d):  # a plain BN whose weight starts at alpha * V_th
            torch.testing.assert_close(m.weight.detach(), torch.full_like(m.weight, m.alpha * 0.5))
            assert not m.bias.detach().any()
    # convolutions keep PyTorch's default init: kaiming_uniform(a=sqrt(5)), bound 1/sqrt(fan_in)
    conv = model.layers[0].conv1[0]
    bound = 1 / math.sqrt(conv.weight[0].numel())
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.95 * bound
    # the other style: weight 1 times a fixed alpha * V_th, Kaiming fan-out (normal, unbounded)
    tdbn = models.create("resnet19", num_classes=10, in_channels=3, T=4, style="tdbn")
    assert tdbn.stem[0][1].alpha == 1.0 and tdbn.layers[0].downsample is None
    bn = tdbn.layers[0].conv2[1]
    assert bn.fixed_scale and torch.equal(bn.weight.detach(), torch.ones_like(bn.weight))
    assert tdbn.layers[0].conv1[0].weight.abs().max() > bound
    with pytest.raises(ValueError, match="style must be one of 'braincog', 'tdbn', got 'x'"):
        models.create("resnet19", style="x")


def test_both_tdbn_forms_compute_the_same_function_at_init():
    x = torch.randn(32, 6, 4, 4) * 2 + 1
    a = TdBatchNorm2d(6, alpha=1 / math.sqrt(2), v_threshold=0.5)
    b = TdBatchNorm2d(6, alpha=1 / math.sqrt(2), v_threshold=0.5, fixed_scale=True)
    torch.testing.assert_close(a(x), b(x))
    torch.testing.assert_close(a.weight.detach(), b.weight.detach() * (0.5 / math.sqrt(2)))


@pytest.mark.parametrize("kw,message", [
    (dict(width=0), "width must be a finite number > 0, got width=0"),
    (dict(width=float("nan")), "width must be a finite number > 0"),
    (dict(num_classes=0), "num_classes must be a positive int, got num_classes=0"),
    (dict(num_classes=2.0), "num_classes must be a positive int, got num_classes=2.0"),
    (dict(in_channels=0), "in_channels must be a positive int, got in_channels=0"),
    (dict(input_size=0), "input_size must be a positive int, got input_size=0"),
    (dict(input_size=(8, 0)), r"input_size must be a positive int or \(H, W\)"),
    (dict(T=0), "T must be a positive int, got T=0"),
    (dict(T=True), "T must be a positive int, got T=True"),
])
def test_create_rejects_nonsense_naming_the_argument(kw, message):
    with pytest.raises(ValueError, match=message):
        models.create("cnn", **kw)


def test_create_accepts_numpy_scalars():
    np = pytest.importorskip("numpy")
    model = models.create("cnn", num_classes=np.int64(3), in_channels=np.int32(1), T=np.int64(2),
                          width=np.float32(0.25), input_size=(np.int64(8), np.int64(8)))
    assert model.T == 2 and type(model.T) is int and model.num_classes == 3
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 2, 3)


def test_tdbn_scales_by_alpha_times_threshold():
    bn = TdBatchNorm2d(4, alpha=1 / math.sqrt(2), v_threshold=0.5)
    x = torch.randn(64, 4, 5, 5) * 3 + 1
    y = bn(x)
    std = y.transpose(0, 1).flatten(1).std(1, unbiased=False)
    torch.testing.assert_close(std, torch.full((4,), 0.5 / math.sqrt(2)), rtol=1e-3, atol=1e-3)
    assert bn.running_mean.abs().sum() > 0  # running statistics are kept
    bn.eval()
    assert bn(x).shape == x.shape


def test_sew_block_adds_after_the_neuron():
    model, shape = build("sew_resnet18")
    block = model.layers[0]
    x = (torch.rand(T, 2, block.conv1[0].in_channels, 8, 8) > 0.5).float()
    with torch.no_grad():
        out = block(x)
    # ADD connect: spikes + spikes, so values in {0, 1, 2}
    assert set(out.unique().tolist()) <= {0.0, 1.0, 2.0}


def test_unknown_names_are_listed():
    with pytest.raises(ValueError, match="valid names: mlp, cnn, vgg11, vggsnn, resnet19, sew_resnet18, sew_resnet34"):
        models.create("resnet20")
    with pytest.raises(TypeError, match="unknown LIF options"):
        models.create("mlp", in_channels=1, input_size=8, neuron={"threshold": 1.0})


@pytest.mark.parametrize("name", ["cnn", "resnet19"])
def test_channels_last_matches_contiguous(name):
    backend = "cpu" if "cpu" in BACKENDS else "torch"
    model, shape = build(name, backend)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.rand(shape)
    y = torch.arange(shape[0]) % 5
    logits, loss, grads = loss_and_grads(model, x, y)
    logits_cl, loss_cl, grads_cl = loss_and_grads(model_cl, x.contiguous(memory_format=torch.channels_last), y)
    torch.testing.assert_close(logits_cl, logits, rtol=1e-4, atol=1e-4)
    for n in grads:
        torch.testing.assert_close(grads_cl[n], grads[n], rtol=1e-3, atol=1e-4, msg=lambda m: f"{n}: {m}")
    conv = next(m for m in model_cl.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("fullgraph", [False, True], ids=["graph", "fullgraph"])
@pytest.mark.parametrize("backend", FAST)
def test_torch_compile(backend, fullgraph):
    torch._dynamo.reset()
    model, shape = build("cnn", backend)
    compiled = torch.compile(model, fullgraph=fullgraph, backend="aot_eager")
    x = torch.rand(shape)
    y = torch.arange(shape[0]) % 5
    logits_ref, loss_ref, grads_ref = loss_and_grads(model, x, y)
    logits, loss, grads = loss_and_grads(compiled, x, y)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-5, atol=1e-5)
    for n in grads_ref:
        torch.testing.assert_close(grads[n], grads_ref[n], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_runs():
    backend = "cpu" if "cpu" in BACKENDS else "torch"
    model, shape = build("resnet19", backend)
    x = torch.rand(shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    loss = F.cross_entropy(logits.float().mean(0), torch.zeros(shape[0], dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
