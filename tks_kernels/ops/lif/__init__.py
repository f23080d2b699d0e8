"""The multi-step LIF neuron: argument checks and dispatch to a backend.

``reference.py`` is the definition; ``cpu.py``, ``triton.py`` and ``cuda.py`` are fused
kernels that must agree with it. Every backend module provides
``lif_multistep(x, v_init, cfg, return_v_seq) -> (spikes, v_last[, v_seq])``, and the
fused ones the functions of contracts.md section 3 (``forward_saved``, ``backward_sg``,
``saved_distance``) through which :func:`lif_multistep_any` runs any surrogate fused.
"""
from __future__ import annotations

import math
import weakref
from types import ModuleType
from typing import Callable, NamedTuple, Optional

import torch
from torch.autograd.function import once_differentiable

from ... import _numbers
from ..._backends import BACKENDS
from .._dispatch import backend_loader, constant_resolver

# Order matters: the index is the surrogate id the kernels use (csrc/lif_math.h).
SURROGATES = (
    "sigmoid",
    "atan",
    "piecewise_quadratic",
    "piecewise_exp",
    "soft_sign",
    "super_spike",
    "erf",
)
DEFAULT_ALPHA = {
    "sigmoid": 4.0,
    "atan": 2.0,
    "piecewise_quadratic": 1.0,
    "piecewise_exp": 1.0,
    "soft_sign": 2.0,
    "super_spike": 1.0,
    "erf": 2.0,
}
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class LIFConfig(NamedTuple):
    """The scalars of one LIF layer (validated by :func:`make_config`)."""

    tau: float
    decay_input: bool
    v_threshold: float
    v_reset: Optional[float]  # None: soft reset
    surrogate: str
    alpha: float
    detach_reset: bool
    # True: fire when h >= v_threshold (SpikingJelly); False: h > v_threshold (BrainCog,
    # snnTorch, the TKS paper's neuron).
    fire_at_threshold: bool = True

    @property
    def surrogate_id(self) -> int:
        return SURROGATES.index(self.surrogate)

    @property
    def soft_reset(self) -> bool:
        return self.v_reset is None

    @property
    def v_rest(self) -> float:
        """The membrane a neuron starts from: v_reset, or 0 for soft reset."""
        return 0.0 if self.v_reset is None else self.v_reset


def _finite_number(name: str, value) -> float:
    if not _numbers.is_real(value):  # NumPy scalars too
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def make_config(
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    surrogate: str = "sigmoid",
    alpha: Optional[float] = None,
    detach_reset: bool = False,
    fire_at_threshold: bool = True,
) -> LIFConfig:
    tau = _finite_number("tau", tau)
    if tau < 1.0:
        raise ValueError(f"tau must be >= 1 (the membrane decays by 1/tau per step), got {tau}")
    v_threshold, v_reset, surrogate, alpha = check_firing(v_threshold, v_reset, surrogate, alpha)
    return LIFConfig(tau, bool(decay_input), v_threshold, v_reset, surrogate, alpha, bool(detach_reset),
                     bool(fire_at_threshold))


def check_firing(v_threshold, v_reset, surrogate, alpha):
    """Validated (v_threshold, v_reset, surrogate, alpha), alpha defaulted per surrogate:
    the options LIF and ParametricLIF share."""
    v_threshold = _finite_number("v_threshold", v_threshold)
    if v_reset is not None:
        v_reset = _finite_number("v_reset", v_reset)
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}; got {surrogate!r}")
    if alpha is None:
        alpha = DEFAULT_ALPHA[surrogate]
    alpha = _finite_number("alpha", alpha)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return v_threshold, v_reset, surrogate, alpha


def check_input(x: torch.Tensor, v_init: Optional[torch.Tensor]) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a floating tensor (float32, float64, float16, bfloat16), got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must be [T, *] with a time dimension T >= 1 first, got shape {tuple(x.shape)}")
    if v_init is None:
        return
    if not isinstance(v_init, torch.Tensor):
        raise TypeError(f"v_init must be a tensor of shape x.shape[1:] or None, got {type(v_init).__name__}")
    if v_init.shape != x.shape[1:]:
        raise ValueError(f"v_init must have shape x.shape[1:] = {tuple(x.shape[1:])}, got {tuple(v_init.shape)}")
    if v_init.dtype != x.dtype:
        raise TypeError(f"v_init must have x's dtype {x.dtype}, got {v_init.dtype}")
    if v_init.device != x.device:
        raise ValueError(f"v_init must be on x's device {x.device}, got {v_init.device}")


_MODULES: dict = {}
backend_module = backend_loader(__name__, _MODULES)
_resolve = constant_resolver(backend_module)


def lif_multistep(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor],
    cfg: LIFConfig,
    backend: str = "auto",
    return_v_seq: bool = False,
):
    """Checked dispatch; see :func:`tks_kernels.functional.lif_multistep`."""
    check_input(x, v_init)
    name = _resolve(backend, x.device.type)
    return _MODULES[name].lif_multistep(x, v_init, cfg, return_v_seq)


# --------------------------------------------------------------------------- any surrogate
#
# A surrogate with no built-in derivative (SpikingJelly's other classes, a user's
# autograd.Function or nn.Module) keeps the fused forward; backward computes g'(d) for
# every step in one vectorised autograd call of the surrogate on the saved distance
# d = h - v_threshold and hands it to the backend's backward kernel (contracts.md, 3).

SG_FUNCTIONS = ("forward_saved", "backward_sg", "saved_distance")

# surrogate object -> its spike at x = 0 (1.0 or 0.0); checked once per object
_HEAVISIDE_CHECKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_PROBE = (-1.0, -1e-3, 0.0, 1e-3, 1.0)


def check_heaviside(fn: Callable, fire_at_threshold: bool, like: torch.Tensor) -> None:
    """Raise unless ``fn``'s forward is the step the kernels fire with: [x >= 0] when
    ``fire_at_threshold`` (SpikingJelly's ``heaviside``), [x > 0] otherwise (probed once per
    surrogate object on a few values of ``like``'s device and compute dtype)."""
    try:
        at_zero = _HEAVISIDE_CHECKED.get(fn)
    except TypeError:  # not hashable or not weak-referenceable: check every call
        at_zero = None
    if at_zero is None:
        probe = torch.tensor(_PROBE, dtype=torch.float64 if like.dtype == torch.float64 else torch.float32,
                             device=like.device)
        try:
            with torch.no_grad():
                y = fn(probe)
        except Exception as exc:  # noqa: BLE001 - any failure is reported with the surrogate's name
            raise ValueError(f"surrogate_function {fn!r} failed on a probe tensor ({type(exc).__name__}: {exc}); "
                             f"it must map a tensor x = h - v_threshold to spikes elementwise") from exc
        if not isinstance(y, torch.Tensor) or y.shape != probe.shape:
            raise ValueError(f"surrogate_function {fn!r} must return a tensor of its input's shape, got "
                             f"{type(y).__name__} {tuple(getattr(y, 'shape', ()))}")
        got = [float(v) for v in y.tolist()]
        if got[:2] != [0.0, 0.0] or got[3:] != [1.0, 1.0] or got[2] not in (0.0, 1.0):
            raise ValueError(f"surrogate_function {fn!r} is not a Heaviside step (at x = {list(_PROBE)} it gave "
                             f"{got}): the fused LIF fires binary spikes [h >= v_threshold]; use a spiking surrogate "
                             f"(SpikingJelly's PoissonPass, MultiLevelSpikeCount and spiking=False are not)")
        at_zero = got[2]
        try:
            _HEAVISIDE_CHECKED[fn] = at_zero
        except TypeError:
            pass
    if (at_zero == 1.0) != bool(fire_at_threshold):
        rule = "[x >= 0]" if at_zero == 1.0 else "[x > 0]"
        raise ValueError(f"surrogate_function {fn!r} fires on {rule} (x = h - v_threshold) but "
                         f"fire_at_threshold={fire_at_threshold}; pass fire_at_threshold={at_zero == 1.0}")


def surrogate_derivative(fn: Callable, d: torch.Tensor) -> torch.Tensor:
    """g'(d) for every element of ``d`` (any shape) in one autograd call of ``fn``."""
    with torch.enable_grad():
        dd = d.detach().requires_grad_(True)
        y = fn(dd)
        if not isinstance(y, torch.Tensor) or y.shape != d.shape:
            raise ValueError(f"surrogate_function {fn!r} must return a tensor of its input's shape {tuple(d.shape)}")
        if not y.requires_grad:  # a surrogate with no gradient: the spike passes none
            return torch.zeros_like(d)
        # dL/ds = 1 everywhere as one broadcast scalar (no [T, *] tensor of ones); a backward
        # that writes into its incoming gradient in place gets a real tensor instead
        try:
            (g,) = torch.autograd.grad(y, dd, torch.ones((), dtype=y.dtype, device=y.device).expand_as(y),
                                       retain_graph=True, allow_unused=True)
        except RuntimeError:
            (g,) = torch.autograd.grad(y, dd, torch.ones_like(y), allow_unused=True)
    return torch.zeros_like(d) if g is None else g.to(d.dtype)


def sg_backend(name: str, op: str = "LIF", loader: Optional[Callable[[str], ModuleType]] = None) -> ModuleType:
    """The module of fused backend ``name`` (of the op ``loader`` loads, default LIF's) if it
    provides the functions of contracts.md section 3; else a clear NotImplementedError."""
    module = (loader or backend_module)(name)
    missing = [f for f in SG_FUNCTIONS if not hasattr(module, f)]
    if missing:
        raise NotImplementedError(
            f"backend {name!r} has no {', '.join(missing)} for the {op} op yet, so a surrogate_function without a "
            f"built-in derivative cannot be differentiated through its fused kernels; use backend='torch' (the "
            f"step-by-step reference), a built-in surrogate (tks_kernels.surrogate: "
            f"{', '.join(SURROGATES)}), or run under torch.no_grad()"
        )
    return module


class _AnySurrogateLIF(torch.autograd.Function):
    """The fused forward of ``module``; backward with g' of ``fn`` (contracts.md, 3)."""

    @staticmethod
    def forward(ctx, x, v_init, cfg, fn, module, return_v_seq):
        spikes, v_last, v_seq, saved = module.forward_saved(x, v_init, cfg, return_v_seq)
        ctx.save_for_backward(saved)
        ctx.args = (cfg, fn, module, return_v_seq, v_init is not None)
        ctx.set_materialize_grads(False)
        return (spikes, v_last, v_seq) if return_v_seq else (spikes, v_last)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes, grad_v_last, grad_v_seq=None):
        (saved,) = ctx.saved_tensors
        cfg, fn, module, return_v_seq, has_v_init = ctx.args
        if grad_spikes is None:
            grad_spikes = torch.zeros_like(saved)
        sg = surrogate_derivative(fn, module.saved_distance(saved, cfg))
        grad_x, grad_v_init = module.backward_sg(grad_spikes, grad_v_last, grad_v_seq if return_v_seq else None,
                                                 saved, sg, cfg)
        return grad_x, (grad_v_init if has_v_init else None), None, None, None, None


def reference_any_surrogate(x: torch.Tensor, v_init: Optional[torch.Tensor], cfg: LIFConfig, fn: Callable,
                            return_v_seq: bool = False):
    """The definition with any surrogate: the step-by-step autograd loop of ``reference.py``
    firing with ``fn(h - v_threshold)`` itself (SpikingJelly's LIFNode, computed in fp32)."""
    from .reference import charge, compute_dtype

    dtype = compute_dtype(x.dtype)
    xc = x.to(dtype)
    tau = torch.tensor(cfg.tau, dtype=dtype, device=x.device)
    v = v_init.to(dtype) if v_init is not None else torch.full_like(xc[0], cfg.v_rest)
    spikes, v_seq = [], []
    for t in range(x.shape[0]):
        h = charge(v, xc[t], tau, cfg.v_rest, cfg.decay_input)
        s = fn(h - cfg.v_threshold).to(dtype)
        sr = s.detach() if cfg.detach_reset else s
        v = h - sr * cfg.v_threshold if cfg.v_reset is None else sr * cfg.v_reset + (1 - sr) * h
        spikes.append(s)
        if return_v_seq:
            v_seq.append(v)
    out = (torch.stack(spikes).to(x.dtype), v.to(x.dtype))
    return out + (torch.stack(v_seq).to(x.dtype),) if return_v_seq else out


def lif_multistep_any(
    x: torch.Tensor,
    v_init: Optional[torch.Tensor],
    cfg: LIFConfig,
    surrogate_function: Callable,
    backend: str = "auto",
    return_v_seq: bool = False,
):
    """As :func:`lif_multistep`, with ``surrogate_function`` (any elementwise spike function
    of x = h - v_threshold with a surrogate gradient) in place of ``cfg.surrogate``/``alpha``."""
    check_input(x, v_init)
    check_heaviside(surrogate_function, cfg.fire_at_threshold, x)
    name = _resolve(backend, x.device.type)
    if name == "torch":
        return reference_any_surrogate(x, v_init, cfg, surrogate_function, return_v_seq)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or (v_init is not None and v_init.requires_grad))
    if not needs_grad:  # the forward does not depend on the surrogate
        return _MODULES[name].lif_multistep(x, v_init, cfg, return_v_seq)
    return _AnySurrogateLIF.apply(x, v_init, cfg, surrogate_function, sg_backend(name), return_v_seq)
