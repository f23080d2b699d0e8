"""Neuron layers: SpikingJelly 2.0's stateful neurons on our own base classes, duck-typed.

:class:`LIF` and :class:`ParametricLIF` take SpikingJelly's ``LIFNode`` /
``ParametricLIFNode`` constructor (same positional order and defaults, ``step_mode="s"``
included) and behave like them: the membrane is a registered memory (``self.v``,
``memories()``, ``reset()``, ``detach()``), the options are attributes that may be set
at any time, ``store_v_seq`` keeps the membrane sequence, and the functional forwards
exist. They run our fused kernels in both step modes, with any surrogate
(:mod:`tks_kernels.surrogate`, SpikingJelly's, or a user's). SpikingJelly utilities that
only call methods (``functional.reset_net``, ``detach_net``, ``set_step_mode``) work on
them; those that check ``isinstance`` (``memopt.checkpoint_module``, monitors) need
:mod:`tks_kernels.spikingjelly`'s subclasses of SpikingJelly's own classes.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import torch
from torch import nn

from . import surrogate as _surrogate
from ._backends import BACKENDS
from .ops import lif as _lif
from .ops import plif as _plif
from .ops.lif import _finite_number

# SpikingJelly's backend names beside ours: 'torch' (plain PyTorch; ours is the
# step-by-step reference too) and 'triton' are ours as well; its 'cupy' kernels are CUDA.
SPIKINGJELLY_BACKENDS = {"cupy": "cuda"}

_TensorOrFloat = Union[torch.Tensor, float]


def backend_name(backend: Any) -> str:
    """Our backend for ``backend`` (ours, or SpikingJelly's 'torch'/'cupy'/'triton')."""
    name = SPIKINGJELLY_BACKENDS.get(backend, backend) if isinstance(backend, str) else backend
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"backend must be 'auto', one of {', '.join(map(repr, BACKENDS))} or SpikingJelly's "
                         f"'cupy' (-> 'cuda'); got {backend!r}")
    return name


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {value!r} of type {type(value).__name__}")


def _tau(value: Any) -> float:
    tau = _finite_number("tau", value)
    if tau < 1.0:
        raise ValueError(f"tau must be >= 1 (the membrane decays by 1/tau per step), got {tau}")
    return tau


def _v_reset(value: Any) -> Optional[float]:
    return None if value is None else _finite_number("v_reset", value)


def firing_of(fn: Any) -> Tuple[str, Optional[float], Optional[Callable]]:
    """``(name, alpha, None)`` for a surrogate with a built-in kernel derivative (a string
    name, our or SpikingJelly's class of that name); ``(placeholder, None, callable)`` for
    any other surrogate, which then runs through the generic fused path."""
    if isinstance(fn, str):
        return fn, None, None  # make_config checks the name
    builtin = _surrogate.builtin_of(fn)
    if builtin is not None:
        return builtin[0], builtin[1], None
    if isinstance(fn, type) and issubclass(fn, torch.autograd.Function):
        fn = fn.apply
    if not callable(fn):
        raise TypeError(f"surrogate_function must be a surrogate (tks_kernels.surrogate or SpikingJelly object, a "
                        f"torch.autograd.Function, an nn.Module or a callable) or one of the names "
                        f"{', '.join(_lif.SURROGATES)}; got {fn!r}")
    return "sigmoid", None, fn


def make_surrogate(surrogate_function: Any, surrogate: Optional[str], alpha: Optional[float]) -> Any:
    """The ``surrogate_function`` a neuron keeps, from the constructor's three ways to give it."""
    if surrogate is not None:
        if surrogate_function is not None:
            raise TypeError("give either surrogate_function= or surrogate= (a name), not both")
        surrogate_function = surrogate
    if surrogate_function is None:
        surrogate_function = "sigmoid"
    if isinstance(surrogate_function, str):
        return _surrogate.from_name(surrogate_function, alpha)
    if alpha is not None:
        raise TypeError(f"alpha= goes with a surrogate name; set the alpha of surrogate_function={surrogate_function!r} "
                        f"itself")
    firing_of(surrogate_function)  # a clear error now for what cannot be a surrogate
    return surrogate_function


def state_as_v_init(v: Any, x0: torch.Tensor, v_rest: float) -> Optional[torch.Tensor]:
    """The kernel's v_init from the kept membrane, as SpikingJelly materialises it: a float
    fills the input's shape (None, the kernel's own fill, when it is the rest potential); a
    tensor of another shape restarts from rest; dtype and device follow the input."""
    if isinstance(v, torch.Tensor):
        if v.shape != x0.shape:
            return None
        if v.dtype != x0.dtype or v.device != x0.device:
            v = v.to(dtype=x0.dtype, device=x0.device)
        return v
    v = float(v)
    return None if v == v_rest else torch.full_like(x0, v)


def _config(node: Any, make: Callable, key: Tuple) -> Any:
    """``make(*key)``, kept on the node while its options stay the same (a call then skips
    the checks: they cost more than a small layer's kernel)."""
    cached = node.__dict__.get("_tks_config")
    if cached is not None and cached[0] == key:
        return cached[1]
    cfg = make(*key)
    node.__dict__["_tks_config"] = (key, cfg)
    return cfg


def run_lif(node: Any, x_seq: torch.Tensor, v: Any, return_v_seq: bool):
    """LIF over ``x_seq`` [T, *] with ``node``'s current options (any object with
    SpikingJelly's LIFNode attributes plus ``backend``/``fire_at_threshold``), from membrane
    ``v``: the fused op of the node's backend. Returns (spikes, v_last[, v_seq])."""
    name, alpha, fn = firing_of(node.surrogate_function)
    cfg = _config(node, _lif.make_config, (node.tau, node.decay_input, node.v_threshold, node.v_reset, name, alpha,
                                           node.detach_reset, getattr(node, "fire_at_threshold", True)))
    _lif.check_input(x_seq, None)
    v_init = state_as_v_init(v, x_seq[0], cfg.v_rest)
    backend = backend_name(getattr(node, "backend", "auto"))
    if fn is None:
        return _lif.lif_multistep(x_seq, v_init, cfg, backend=backend, return_v_seq=return_v_seq)
    return _lif.lif_multistep_any(x_seq, v_init, cfg, fn, backend=backend, return_v_seq=return_v_seq)


def run_plif(node: Any, x_seq: torch.Tensor, v: Any, return_v_seq: bool):
    """As :func:`run_lif` for a PLIF node (its ``w`` the parameter, 1/tau = sigmoid(w))."""
    name, alpha, fn = firing_of(node.surrogate_function)
    cfg = _config(node, _plif.make_config, (node.decay_input, node.v_threshold, node.v_reset, name, alpha,
                                            node.detach_reset, getattr(node, "fire_at_threshold", True)))
    _lif.check_input(x_seq, None)
    v_init = state_as_v_init(v, x_seq[0], cfg.v_rest)
    backend = backend_name(getattr(node, "backend", "auto"))
    if fn is None:
        return _plif.plif_multistep(x_seq, v_init, node.w, cfg, backend=backend, return_v_seq=return_v_seq)
    return _plif.plif_multistep_any(x_seq, v_init, node.w, cfg, fn, backend=backend, return_v_seq=return_v_seq)


class MemoryModule(nn.Module):
    """SpikingJelly's ``base.MemoryModule`` behaviour, our own class: state registered with
    :meth:`register_memory` reads and writes as an attribute, :meth:`reset` restores it,
    :meth:`detach` cuts its graph; ``step_mode`` ('s' or 'm') is checked when set, and
    ``forward`` calls :meth:`single_step_forward` or :meth:`multi_step_forward`."""

    def __init__(self) -> None:
        super().__init__()
        self._memories: Dict[str, Any] = {}
        self._memories_rv: Dict[str, Any] = {}
        self._step_mode = "s"

    # --- step mode
    def supported_step_mode(self) -> Tuple[str, ...]:
        return ("s", "m")

    @property
    def step_mode(self) -> str:
        """'s': one step per call, input ``[*]``; 'm': all steps, input ``[T, *]``."""
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value not in self.supported_step_mode():
            raise ValueError(f"step_mode must be one of {self.supported_step_mode()} ('s': single step, input [*]; "
                             f"'m': multi-step, input [T, *]); got {value!r}")
        self._step_mode = value

    # --- memories
    def register_memory(self, name: str, value: Any) -> None:
        """Make ``name`` a state variable starting (and reset) at ``value``."""
        if hasattr(self, name):
            raise ValueError(f"register_memory: {name!r} is already an attribute of {type(self).__name__}")
        self._memories[name] = value
        self.set_reset_value(name, value)

    def set_reset_value(self, name: str, value: Any) -> None:
        self._memories_rv[name] = copy.deepcopy(value)

    def get_reset_value(self, name: str) -> Any:
        if name not in self._memories:
            raise KeyError(f"{name} is not a registered memory.")
        if name not in self._memories_rv:
            raise KeyError(f"{name} has no reset value. Call set_reset_value first.")
        return self._memories_rv[name]

    def reset(self) -> None:
        """Every memory back to its reset value (a float value makes the next call start
        afresh with the input's shape)."""
        for name, cur in self._memories.items():
            rv = self._memories_rv[name]
            if (isinstance(cur, torch.Tensor) and isinstance(rv, torch.Tensor) and cur.shape == rv.shape
                    and cur.dtype == rv.dtype and cur.device == rv.device):
                try:  # in place, cutting the old graph first (as SpikingJelly)
                    cur.detach_()
                except RuntimeError:  # a view cannot be detached in place
                    self._memories[name] = rv.detach().clone()
                else:
                    cur.copy_(rv)
            elif isinstance(rv, (int, float)):
                self._memories[name] = rv
            else:
                self._memories[name] = copy.deepcopy(rv)

    def detach(self) -> None:
        """Cut the graph of every tensor memory (truncated BPTT: ``functional.detach_net``)."""
        for value in self._memories.values():
            if isinstance(value, torch.Tensor):
                value.detach_()

    def memories(self) -> Iterator[Any]:
        yield from self._memories.values()

    def named_memories(self) -> Iterator[Tuple[str, Any]]:
        yield from self._memories.items()

    def __getattr__(self, name: str) -> Any:
        memories = self.__dict__.get("_memories")  # not self._memories: no recursion while unpickling
        if memories is not None and name in memories:
            return memories[name]
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        memories = self.__dict__.get("_memories")
        if memories is not None and name in memories:
            memories[name] = value
        else:
            super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if name in self._memories:
            del self._memories[name]
            del self._memories_rv[name]
        else:
            super().__delattr__(name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._memories))

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() move the state and the tensor reset values too
        for store in (self._memories, self._memories_rv):
            for name, value in store.items():
                if isinstance(value, torch.Tensor):
                    store[name] = fn(value)
        return super()._apply(fn, *args, **kwargs)

    def _replicate_for_data_parallel(self):
        replica = super()._replicate_for_data_parallel()
        replica._memories = self._memories.copy()
        return replica

    # --- functional forwards (explicit state) and the stateful ones built on them
    def materialize_states(self, inputs: Tuple[Any, ...], states: Tuple[Any, ...], step_mode: str) -> Tuple[Any, ...]:
        return states

    def single_step_functional_forward(self, inputs, states, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement single_step_functional_forward.")

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        outputs = []
        for t in range(inputs[0].shape[0]):
            out, states = self.single_step_functional_forward(tuple(x[t] for x in inputs), states, **kwargs)
            outputs.append(out)
        return tuple(torch.stack(seq) for seq in zip(*outputs)), states

    def functional_forward(self, inputs, states, **kwargs):
        """``(outputs, new_states)`` of one call in the current step mode; the module's own
        memories are neither read nor written."""
        if self.step_mode == "s":
            return self.single_step_functional_forward(inputs, self.materialize_states(inputs, states, "s"), **kwargs)
        return self.multi_step_functional_forward(inputs, self.materialize_states(inputs, states, "m"), **kwargs)

    def _stateful(self, step_mode: str, forward, x, *args, **kwargs):
        inputs = (x, *args)
        states = self.materialize_states(inputs, tuple(self._memories.values()), step_mode)
        outputs, states = forward(inputs, states, **kwargs)
        for name, value in zip(list(self._memories), states):
            self._memories[name] = value
        return outputs[0] if len(outputs) == 1 else outputs

    def single_step_forward(self, x, *args, **kwargs):
        return self._stateful("s", self.single_step_functional_forward, x, *args, **kwargs)

    def multi_step_forward(self, x_seq, *args, **kwargs):
        return self._stateful("m", self.multi_step_functional_forward, x_seq, *args, **kwargs)

    def forward(self, *args, **kwargs):
        if self.step_mode == "s":
            return self.single_step_forward(*args, **kwargs)
        return self.multi_step_forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}"


def _option(name: str, check: Callable[[Any], Any], doc: str) -> property:
    """An option attribute checked when set and read by the next call."""
    key = "_opt_" + name

    def get(self):
        return self.__dict__[key]

    def set_(self, value):
        self.__dict__[key] = check(value)

    return property(get, set_, doc=doc)


class BaseNode(MemoryModule):
    """What the spiking neurons share, as SpikingJelly's ``neuron.BaseNode``: the membrane
    memory ``v`` (starts at ``v_reset``, 0 for soft reset), the options, ``store_v_seq``,
    and the fused forwards. A subclass provides :meth:`_run` (x [T, *] and membrane ->
    (spikes, v_last[, v_seq])).

    ``store_v_seq``: multi-step mode keeps the membrane after every step in ``v_seq``
    ``[T, *]``; single-step mode appends each step's membrane to ``v_seq`` until
    :meth:`reset` (restarting when the input's shape, device or dtype changes). Setting it
    clears ``v_seq``.
    """

    v_threshold = _option("v_threshold", lambda v: _finite_number("v_threshold", v), "firing threshold")
    v_reset = _option("v_reset", _v_reset, "membrane after a spike; None: soft reset (subtract v_threshold)")
    detach_reset = _option("detach_reset", lambda v: _flag("detach_reset", v), "spike as a constant in the reset")
    decay_input = _option("decay_input", lambda v: _flag("decay_input", v), "whether the input decays by 1/tau too")
    fire_at_threshold = _option("fire_at_threshold", lambda v: _flag("fire_at_threshold", v),
                                "fire when h >= v_threshold (True, SpikingJelly) or h > v_threshold")
    backend = _option("backend", backend_name, "'auto', 'torch', 'cpu', 'triton', 'cuda' (or SpikingJelly's 'cupy')")

    def __init__(self, v_threshold: float, v_reset: Optional[float], surrogate_function: Any, detach_reset: bool,
                 step_mode: str, backend: Any, store_v_seq: bool, *, surrogate: Optional[str], alpha: Optional[float],
                 fire_at_threshold: bool) -> None:
        # SpikingJelly 2.0's LIFNode has no backend argument, so its 8th positional
        # argument is store_v_seq: a bool there is taken as that (no backend is a bool).
        if isinstance(backend, bool):
            if store_v_seq is not False:
                raise TypeError(f"backend must be a backend name, got {backend!r}")
            backend, store_v_seq = "auto", backend
        super().__init__()
        self.v_threshold = v_threshold
        self.v_reset = v_reset
        self.register_memory("v", 0.0 if self.v_reset is None else self.v_reset)
        self.detach_reset = detach_reset
        self.surrogate_function = make_surrogate(surrogate_function, surrogate, alpha)
        self.step_mode = step_mode
        self.backend = backend
        self.fire_at_threshold = fire_at_threshold
        self.store_v_seq = store_v_seq
        # SpikingJelly's scale for its Lava conversion (kept so the attribute exists)
        self.lava_s_cale = 1 << 6

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "surrogate_function" and isinstance(value, str):
            value = _surrogate.from_name(value)  # a name becomes its object (nn.Module children take no str)
        super().__setattr__(name, value)

    # --- SpikingJelly's attributes
    @property
    def store_v_seq(self) -> bool:
        return self._store_v_seq

    @store_v_seq.setter
    def store_v_seq(self, value: bool) -> None:
        self._store_v_seq = _flag("store_v_seq", value)
        self.v_seq: Optional[torch.Tensor] = None

    @property
    def surrogate(self) -> Optional[str]:
        """The built-in kernel surrogate in use (None: the generic path of another surrogate)."""
        fn = self.surrogate_function
        if isinstance(fn, str):
            return fn
        builtin = _surrogate.builtin_of(fn)
        return None if builtin is None else builtin[0]

    @property
    def alpha(self) -> Optional[float]:
        """``surrogate_function.alpha`` (settable; None when it has none)."""
        return getattr(self.surrogate_function, "alpha", None)

    @alpha.setter
    def alpha(self, value: float) -> None:
        self.surrogate_function.alpha = value

    @staticmethod
    def apply_hard_reset(v: torch.Tensor, spike: torch.Tensor, v_reset: float) -> torch.Tensor:
        return (1.0 - spike) * v + spike * v_reset

    @staticmethod
    def apply_soft_reset(v: torch.Tensor, spike: torch.Tensor, v_threshold: float) -> torch.Tensor:
        return v - spike * v_threshold

    def reset(self) -> None:
        super().reset()
        self.v_seq = None

    def detach(self) -> None:
        super().detach()
        if isinstance(self.v_seq, torch.Tensor):
            self.v_seq = self.v_seq.detach()

    def materialize_states(self, inputs, states, step_mode):
        """SpikingJelly's: the membrane as a tensor of the (first step's) input shape."""
        x = inputs[0][0] if step_mode == "m" else inputs[0]
        v = states[0]
        if isinstance(v, (int, float)):
            v = torch.full_like(x, float(v))
        elif isinstance(v, torch.Tensor):
            if v.shape != x.shape:
                v = torch.full_like(x, 0.0 if self.v_reset is None else self.v_reset)
            elif v.dtype != x.dtype or v.device != x.device:
                v = v.to(dtype=x.dtype, device=x.device)
        return (v, *states[1:])

    # --- forwards: all through the fused op
    def _run(self, x_seq: torch.Tensor, v: Any, return_v_seq: bool):  # pragma: no cover - subclasses
        raise NotImplementedError

    def _check_not_recomputed(self) -> None:
        # A forward inside backward is activation checkpointing's recomputation: it would
        # read the membrane already advanced by the first forward (wrong gradients), since
        # SpikingJelly's memopt saves and restores the state of its own MemoryModules only.
        if not torch.compiler.is_compiling() and torch.is_grad_enabled() and torch._C._current_graph_task_id() != -1:
            raise RuntimeError(
                f"{type(self).__name__} ran again inside backward (activation checkpointing recomputing it): its "
                f"state is not restored for the recomputation, so the gradients would be wrong. With SpikingJelly's "
                f"memopt.checkpoint_module use tks_kernels.spikingjelly.{'ParametricLIFNode' if isinstance(self, ParametricLIF) else 'LIFNode'}"
                f" (a SpikingJelly MemoryModule), or do not checkpoint stateful neurons"
            )

    def single_step_functional_forward(self, inputs, states, **kwargs):
        spikes, v = self._run(inputs[0].unsqueeze(0), states[0], False)
        return (spikes[0],), (v, *states[1:])

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        spikes, v = self._run(inputs[0], states[0], False)
        return (spikes,), (v, *states[1:])

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[*]`` -> spikes ``[*]``, one step from the kept membrane."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        self._check_not_recomputed()
        spikes, v = self._run(x.unsqueeze(0), self.v, False)
        self.v = v
        if self.store_v_seq:
            seq = self.v_seq
            step = v.unsqueeze(0)
            if seq is None or seq.shape[1:] != step.shape[1:] or seq.device != step.device or seq.dtype != step.dtype:
                self.v_seq = step.clone()
            else:
                self.v_seq = torch.cat((seq, step))
        return spikes[0]

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """x ``[T, *]`` -> spikes ``[T, *]``, all steps in one fused kernel."""
        self._check_not_recomputed()
        out = self._run(x_seq, self.v, self.store_v_seq)
        self.v = out[1]
        self.v_seq = out[2] if self.store_v_seq else None
        return out[0]

    def extra_repr(self) -> str:
        r = f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, " \
            f"step_mode={self.step_mode}"
        return r + self._extra_repr_tail()

    def _extra_repr_tail(self) -> str:
        r = f", backend={self.backend}"
        if not self.fire_at_threshold:
            r += ", fire_at_threshold=False"
        if not isinstance(self.surrogate_function, nn.Module):  # a child module prints itself
            r += f", surrogate_function={self.surrogate_function!r}"
        return r


class LIF(BaseNode):
    """Leaky integrate-and-fire neuron: SpikingJelly's ``LIFNode``, fused.

    Charge ``h = v + (x - (v - v_reset)) / tau`` (``decay_input``) or
    ``h = v - (v - v_reset) / tau + x``, fire ``s = [h >= v_threshold]``, reset to ``v_reset``
    (hard) or by ``v_threshold`` (soft, ``v_reset=None``); DESIGN.md.

    ``step_mode="s"`` (the default, as SpikingJelly): input ``[*]``, one step per call;
    ``"m"``: input ``[T, *]``, all T steps in one fused kernel (the fast path). The
    membrane ``self.v`` carries over between calls (gradients flow through it) until
    :meth:`reset` / ``reset_net``.

    Args (SpikingJelly's, in its order):
        tau: membrane time constant (>= 1).
        decay_input: whether the input decays by 1/tau too.
        v_threshold: firing threshold.
        v_reset: membrane after a spike; None for soft reset.
        surrogate_function: the spike's surrogate: a :mod:`tks_kernels.surrogate` or
            SpikingJelly surrogate object (seven have a built-in kernel derivative and use
            the object's ``alpha`` at each call), any other spiking surrogate (an
            ``nn.Module``, ``torch.autograd.Function`` or callable: its derivative is
            computed in one vectorised call for the fused backward), or a name of
            ``tks_kernels.ops.lif.SURROGATES``. Default ``Sigmoid(alpha=4)``.
        detach_reset: treat the spike as a constant in the reset.
        step_mode: 's' or 'm'.
        backend: 'auto', 'torch', 'cpu', 'triton', 'cuda', or SpikingJelly's 'cupy' (CUDA).
            (A bool here is SpikingJelly 2.0's positional ``store_v_seq``.)
        store_v_seq: keep the membrane of every step in ``self.v_seq``.

    Keyword-only (ours): ``surrogate``/``alpha``: the surrogate by name;
    ``fire_at_threshold``: False fires on ``h > v_threshold`` (BrainCog, snnTorch, the TKS paper).
    """

    tau = _option("tau", _tau, "membrane time constant (>= 1)")

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate_function: Any = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        backend: str = "auto",
        store_v_seq: bool = False,
        *,
        surrogate: Optional[str] = None,
        alpha: Optional[float] = None,
        fire_at_threshold: bool = True,
    ) -> None:
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, backend, store_v_seq,
                         surrogate=surrogate, alpha=alpha, fire_at_threshold=fire_at_threshold)
        self.tau = tau
        self.decay_input = decay_input

    @property
    def cfg(self) -> _lif.LIFConfig:
        """The options as the kernels take them (a surrogate without a built-in derivative
        shows as the placeholder 'sigmoid'; it runs through the generic path)."""
        name, alpha, _ = firing_of(self.surrogate_function)
        return _lif.make_config(self.tau, self.decay_input, self.v_threshold, self.v_reset, name, alpha,
                                self.detach_reset, self.fire_at_threshold)

    def _run(self, x_seq, v, return_v_seq):
        return run_lif(self, x_seq, v, return_v_seq)

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"step_mode={self.step_mode}, tau={self.tau}" + self._extra_repr_tail())


class ParametricLIF(BaseNode):
    """Parametric LIF neuron (PLIF; Fang et al., ICCV 2021): SpikingJelly's
    ``ParametricLIFNode``, fused. A LIF neuron whose time constant is learnt, one per layer:
    ``1/tau = k = sigmoid(w)``, ``w`` a scalar ``nn.Parameter`` initialised to
    ``-log(init_tau - 1)``. Charge ``h = v + (x - (v - v_reset)) * k`` (``decay_input``) or
    ``h = v - (v - v_reset) * k + x``; fire and reset as :class:`LIF`. The fused backward
    sums dL/dk over every neuron and step in the same pass.

    Args: ``init_tau`` (> 1), then as :class:`LIF` (SpikingJelly's order and defaults,
    ``step_mode="s"``), with the same keyword-only extras.
    """

    def __init__(
        self,
        init_tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate_function: Any = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        backend: str = "auto",
        store_v_seq: bool = False,
        *,
        surrogate: Optional[str] = None,
        alpha: Optional[float] = None,
        fire_at_threshold: bool = True,
    ) -> None:
        w0 = _plif.init_w(init_tau)
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, backend, store_v_seq,
                         surrogate=surrogate, alpha=alpha, fire_at_threshold=fire_at_threshold)
        self.decay_input = decay_input
        self.init_tau = float(init_tau)
        self.w = nn.Parameter(torch.tensor(w0, dtype=torch.float32))

    @property
    def tau(self) -> float:
        """The current time constant, 1 / sigmoid(w)."""
        with torch.no_grad():
            return 1.0 / torch.sigmoid(self.w.detach().double()).item()

    @property
    def cfg(self) -> _plif.PLIFConfig:
        name, alpha, _ = firing_of(self.surrogate_function)
        return _plif.make_config(self.decay_input, self.v_threshold, self.v_reset, name, alpha, self.detach_reset,
                                 self.fire_at_threshold)

    def _run(self, x_seq, v, return_v_seq):
        return run_plif(self, x_seq, v, return_v_seq)

    def extra_repr(self) -> str:
        with torch.no_grad():
            tau = 1.0 / self.w.sigmoid()
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"step_mode={self.step_mode}, tau={tau}" + self._extra_repr_tail())


def _is_memory_module(m: nn.Module) -> bool:
    # ours, or SpikingJelly's (its MemoryModule keeps the same _memories dict)
    return isinstance(m, MemoryModule) or ("_memories" in m.__dict__ and callable(getattr(m, "reset", None)))


def reset_net(net: nn.Module) -> None:
    """Reset the state of every stateful module in ``net`` (ours or SpikingJelly's; call
    between samples/batches)."""
    for m in net.modules():
        if _is_memory_module(m):
            m.reset()


def detach_net(net: nn.Module) -> None:
    """Cut the graph of the state of every stateful module in ``net`` (truncated BPTT)."""
    for m in net.modules():
        if _is_memory_module(m):
            m.detach()

