"""SpikingJelly code runs unchanged with our neurons: its model-zoo builders with
``spiking_neuron=tks_kernels.LIF`` (or ParametricLIF, or tks_kernels.spikingjelly's
subclasses) and SpikingJelly's own keyword arguments give the outputs and parameter
gradients of the same network with SpikingJelly's neurons and the same weights, looped
over T in single-step mode and in multi-step mode; truncated BPTT with
``functional.detach_net``, ``memopt.checkpoint_module``, ``reset_net`` and monitors work.
Small images, widths and T keep it to seconds on a CPU."""
from __future__ import annotations

import pytest
import torch

import tks_kernels

import sj_zoo
from lif_cases import rel_err

sjn = pytest.importorskip("spikingjelly.activation_based.neuron")
sjs = pytest.importorskip("spikingjelly.activation_based.surrogate")
sjf = pytest.importorskip("spikingjelly.activation_based.functional")
layer = pytest.importorskip("spikingjelly.activation_based.layer")
memopt = pytest.importorskip("spikingjelly.activation_based.memopt")
tks_sj = pytest.importorskip("tks_kernels.spikingjelly")

T, B = 2, 2


def _vgg11_bn(neuron, **kw):
    # The 512*7*7 -> 4096 -> 4096 classifier is 120M weights: the builder runs on the meta
    # device (no memory, no init), its Linear layers are shrunk (the builder's neurons
    # stay), then every layer gets real, freshly initialised weights.
    with torch.device("meta"):
        net = sj_zoo.load("spiking_vgg").spiking_vgg11_bn(spiking_neuron=neuron, num_classes=5, **kw)
    c = net.classifier
    c[0], c[3], c[6] = layer.Linear(512 * 7 * 7, 16), layer.Linear(16, 16), layer.Linear(16, 5)
    net.to_empty(device="cpu")
    for m in net.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return net


ZOO = {
    "spiking_resnet18": (lambda n, **kw: sj_zoo.load("spiking_resnet").spiking_resnet18(spiking_neuron=n, num_classes=5,
                                                                                          **kw), (3, 8, 8)),
    "sew_resnet18": (lambda n, **kw: sj_zoo.load("sew_resnet").sew_resnet18(spiking_neuron=n, num_classes=5, cnf="ADD",
                                                                              **kw), (3, 8, 8)),
    "spiking_vgg11_bn": (_vgg11_bn, (3, 32, 32)),
    "plif_net.MNISTNet": (lambda n, **kw: sj_zoo.load("parametric_lif_net").MNISTNet(channels=4, spiking_neuron=n,
                                                                                      **kw), (1, 28, 28)),
    "plif_net.CIFAR10Net": (lambda n, **kw: sj_zoo.load("parametric_lif_net").CIFAR10Net(channels=4, spiking_neuron=n,
                                                                                          **kw), (3, 32, 32)),
}
NEURONS = {  # ours -> SpikingJelly's
    "tks.LIF": (tks_kernels.LIF, sjn.LIFNode),
    "tks.sj.LIFNode": (tks_sj.LIFNode, sjn.LIFNode),
    "tks.ParametricLIF": (tks_kernels.ParametricLIF, sjn.ParametricLIFNode),
    "tks.sj.ParametricLIFNode": (tks_sj.ParametricLIFNode, sjn.ParametricLIFNode),
}
# Our base class in both step modes, the SpikingJelly subclass in multi-step mode (and in
# single-step mode on one network): the machine is shared, each case builds two networks.
CASES = [(z, n, m) for z in ZOO for n, m in (("tks.LIF", "s"), ("tks.LIF", "m"), ("tks.sj.LIFNode", "m"))
         if z != "plif_net.CIFAR10Net"]
CASES += [("spiking_resnet18", "tks.sj.LIFNode", "s")]
CASES += [(z, n, m) for z in ("plif_net.MNISTNet", "plif_net.CIFAR10Net")
          for n, m in (("tks.ParametricLIF", "s"), ("tks.ParametricLIF", "m"), ("tks.sj.ParametricLIFNode", "m"))]


def run_net(net, x, step_mode):
    torch.manual_seed(7)  # the same dropout masks for both networks
    sjf.set_step_mode(net, step_mode)
    sjf.reset_net(net)
    y = net(x) if step_mode == "m" else torch.stack([net(xt) for xt in x])
    wts = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    (y * wts).sum().backward()  # a gradient at every output, whether or not it spiked
    return y.detach(), {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("zoo,neuron,step_mode", CASES, ids=["-".join(c) for c in CASES])
def test_zoo_network_equals_spikingjellys(zoo, neuron, step_mode):
    build, sample = ZOO[zoo]
    ours_cls, sj_cls = NEURONS[neuron]
    kwargs = dict(surrogate_function=sjs.ATan(), detach_reset=True)  # SpikingJelly's own keyword arguments
    torch.manual_seed(1)
    ref = build(sj_cls, **kwargs)
    ours = build(ours_cls, **kwargs)
    ours.load_state_dict(ref.state_dict())
    n_ours = sum(isinstance(m, ours_cls) for m in ours.modules())
    assert n_ours == sum(isinstance(m, sj_cls) for m in ref.modules()) > 0
    x = torch.rand(T, B, *sample)
    y_ref, g_ref = run_net(ref, x, step_mode)
    y, g = run_net(ours, x, step_mode)
    assert y.shape == y_ref.shape and rel_err(y, y_ref) < 1e-5
    assert g.keys() == g_ref.keys() and len(g) > 0
    assert any(v.abs().sum() > 0 for v in g.values())
    for k in g:
        assert rel_err(g[k], g_ref[k]) < 1e-4, k
    if "Parametric" in neuron:
        assert any(k.endswith(".w") for k in g)


def _small_net(neuron, step_mode):
    torch.manual_seed(2)
    return torch.nn.Sequential(
        layer.Linear(6, 8, step_mode=step_mode),
        neuron(surrogate_function=sjs.ATan(), detach_reset=True, step_mode=step_mode),
        layer.Linear(8, 3, step_mode=step_mode),
        neuron(v_reset=None, step_mode=step_mode),
    )


@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("neuron", list(NEURONS))
def test_truncated_bptt_with_detach_net_equals_spikingjellys(neuron, step_mode):
    x = torch.randn(8, 4, 6) * 2
    grads = []
    for cls in NEURONS[neuron][::-1]:
        net = _small_net(cls, step_mode)
        sjf.reset_net(net)
        for chunk in x.split(3):
            y = net(chunk) if step_mode == "m" else torch.stack([net(xt) for xt in chunk])
            y.sum().backward()  # a leak into the previous chunk would fail: its graph is freed
            sjf.detach_net(net)
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("neuron", ["tks.sj.LIFNode", "tks.sj.ParametricLIFNode"])
def test_memopt_checkpoint_module_equals_spikingjellys(neuron):
    x = torch.randn(8, 4, 6) * 2
    results = []
    for cls in NEURONS[neuron][::-1]:
        net = _small_net(cls, "m")
        sjf.reset_net(net)
        ck = torch.nn.Sequential(memopt.checkpoint_module(net[:2], chunks=2), net[2:])
        y = torch.cat([ck(x[:4]), ck(x[4:])])  # the second call starts from the kept state
        y.sum().backward()
        results.append([y.detach(), net[1].v.detach()] + [p.grad.clone() for p in net.parameters()])
    for a, b in zip(*results):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("neuron", ["tks.LIF", "tks.ParametricLIF"])
def test_checkpointing_our_base_class_raises_instead_of_wrong_gradients(neuron):
    net = _small_net(NEURONS[neuron][0], "m")
    y = memopt.checkpoint_module(net[:2], chunks=2)(torch.randn(4, 2, 6))
    with pytest.raises(RuntimeError, match="tks_kernels.spikingjelly"):
        y.sum().backward()


def _spikingjelly_warnings(fn) -> list:
    """SpikingJelly's (loguru, off by default) warnings while fn() runs."""
    from spikingjelly.logger import logger

    messages = []
    logger.enable("spikingjelly")
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        fn()
    finally:
        logger.remove(sink)
        logger.disable("spikingjelly")
    return messages


def test_reset_net_set_step_mode_and_monitors_see_the_subclasses():
    net = _small_net(tks_sj.LIFNode, "s")

    def use(net):
        sjf.set_step_mode(net, "m")
        net(torch.randn(3, 2, 6))
        sjf.reset_net(net)
        sjf.detach_net(net)

    assert _spikingjelly_warnings(lambda: use(net)) == []
    assert net[1].step_mode == "m" and net[1].v == 0.0
    # our own base class works with them too, with SpikingJelly's "not a MemoryModule" notes
    ours = _small_net(tks_kernels.LIF, "s")
    notes = _spikingjelly_warnings(lambda: use(ours))
    assert ours[1].step_mode == "m" and ours[1].v == 0.0
    assert any("not a MemoryModule" in n for n in notes) and any("not a StepModule" in n for n in notes)
    monitor = sj_zoo.load_monitor()
    mon = monitor.OutputMonitor(net, sjn.LIFNode)
    vmon = monitor.AttributeMonitor("v", False, net, sjn.BaseNode)
    x = torch.randn(3, 2, 6) * 3
    out = net(x)
    assert len(mon.records) == 2 and torch.equal(mon.records[1], out)
    assert len(vmon.records) == 2 and torch.equal(vmon.records[1], net[3].v)
    mon.remove_hooks()
    vmon.remove_hooks()


def test_our_reset_and_detach_helpers_cover_both_kinds():
    net = torch.nn.Sequential(tks_kernels.LIF(step_mode="m"), tks_sj.LIFNode(step_mode="m"), sjn.LIFNode(step_mode="m"))
    x = torch.randn(3, 2, 4, requires_grad=True) * 3
    net(x)
    tks_kernels.functional.detach_net(net)
    assert all(not m.v.requires_grad for m in net)
    tks_kernels.reset_net(net)
    assert all(m.v == 0.0 for m in net)


@pytest.mark.parametrize("neuron", list(NEURONS))
def test_spikingjelly_containers_drive_our_neurons_as_theirs(neuron):
    x = torch.randn(5, 2, 4) * 2
    results = []
    for cls in NEURONS[neuron][::-1]:
        torch.manual_seed(4)
        net = torch.nn.Sequential(
            layer.MultiStepContainer(torch.nn.Linear(4, 4), cls(surrogate_function=sjs.ATan(), store_v_seq=True)),
            layer.ElementWiseRecurrentContainer(cls(v_reset=None), element_wise_function=lambda a, b: a + b),
        )
        sjf.set_step_mode(net[1], "s")
        y = net[0](x)
        z = torch.stack([net[1](yt) for yt in y])
        xg = x.clone().requires_grad_()
        sjf.reset_net(net)
        loss = torch.stack([net[1](yt) for yt in net[0](xg)]).sum() + net[0][1].v_seq.sum()
        results.append((y, z, net[0][1].v_seq.detach()) + torch.autograd.grad(loss, [xg] + list(net.parameters())))
    for a, b in zip(*results):
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("neuron", ["tks.LIF", "tks.sj.LIFNode"])
def test_lif_fc_mnist_training_loop_gives_spikingjellys_losses(neuron):
    """SpikingJelly's examples/lif_fc_mnist.py loop (single-step neurons looped over T,
    Poisson-encoded input, MSE on the firing rate, reset_net per batch) on random digits."""
    encoding = pytest.importorskip("spikingjelly.activation_based.encoding")
    imgs = torch.rand(6, 4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (6, 4), generator=torch.Generator().manual_seed(1))
    curves = []
    for cls in NEURONS[neuron][::-1]:
        torch.manual_seed(0)
        net = torch.nn.Sequential(layer.Flatten(), layer.Linear(28 * 28, 10, bias=False),
                                  cls(tau=2.0, surrogate_function=sjs.ATan()))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        encoder = encoding.PoissonEncoder()
        torch.manual_seed(5)  # the same Poisson spikes for both
        losses = []
        for img, label in zip(imgs, labels):
            opt.zero_grad()
            out_fr = sum(net(encoder(img)) for _ in range(4)) / 4
            loss = torch.nn.functional.mse_loss(out_fr, torch.nn.functional.one_hot(label, 10).float())
            loss.backward()
            opt.step()
            sjf.reset_net(net)
            losses.append(loss.item())
        curves.append(losses)
    assert curves[0] == pytest.approx(curves[1], rel=1e-5, abs=1e-7)
    assert curves[0][0] != curves[0][-1]
