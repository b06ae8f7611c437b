"""Hook context managers shared by the analyses: truncated forwards, ReLU backward overrides, tracing.

Every hook is registered inside a context manager and removed in ``finally`` (the captum pattern,
``guided_backprop_deconvnet.py``), and every module attribute changed for the duration (ReLU
``inplace`` flags, conv/pool padding) is restored there too, so a model leaves these helpers exactly
as it entered them, even when the forward raises.

- :func:`truncated` prepares a model for one reconstruction method and returns a callable that runs
  the forward only up to the target module (a private :class:`StopForward` raised by a forward hook
  ends it: nothing after the target is computed, e.g. alexnet's 58 M-parameter classifier, which made
  captum's per-call reconstructions slow, shared/PERFORMANCE.md).
- ReLU overrides (Zeiler & Fergus 2013; Springenberg et al. 2015) make each ``nn.ReLU`` compute a
  custom autograd Function with the method's backward rule; functional ReLUs (``F.relu``, ``torch.relu``,
  ``Tensor.relu``) cannot be hooked, so a ``TorchFunctionMode`` watches the forward and raises a
  :class:`~sitegen.errors.ModelError` naming the module that calls one: never a silently wrong picture.
- :func:`padding_off` zeroes conv/pool padding on chosen axes, for the receptive-field crops of
  :mod:`sitegen.analyses._crop`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from sitegen.errors import ModelError

__all__ = [
    "METHODS",
    "StopForward",
    "Step",
    "Truncated",
    "get_module",
    "padding_off",
    "stop_after",
    "truncated",
]

#: Reconstruction methods: which rule the backward pass applies at each ReLU.
METHODS = ("deconvnet", "guided", "gradient")

# Calls that compute a ReLU outside an nn.ReLU module. A ReLU written any other way (clamp(min=0),
# x * (x > 0)) cannot be recognised and behaves like the plain gradient.
_RELU_FUNCTIONS = frozenset({torch.relu, torch.relu_, F.relu, F.relu_, Tensor.relu, Tensor.relu_})


class StopForward(Exception):
    """Raised by the capture hook once the target module's output is in hand: ends the forward early."""


class _DeconvReLU(torch.autograd.Function):
    """ReLU whose backward passes ``relu(signal)`` whatever the forward sign (Zeiler & Fergus 2013, 2.1)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clamp(min=0)  # not torch.relu: the functional-ReLU watch must not see this one

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes ``relu(signal)`` where the forward input was positive (guided backprop)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        # the same mask as autograd's relu backward (threshold_backward on the result), then relu
        return torch.where(out > 0, grad.clamp(min=0), 0.0)


_OVERRIDES: dict[str, type[torch.autograd.Function]] = {"deconvnet": _DeconvReLU, "guided": _GuidedReLU}


@dataclass(slots=True)
class Step:
    """One leaf module call seen by a traced forward (see :attr:`Truncated.steps`)."""

    path: str
    module: nn.Module
    inputs: tuple[Any, ...]
    input_versions: tuple[int, ...]
    output: Any = None
    output_version: int = -1


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (a ``named_modules()`` path, ``""`` for the model itself).

    Raises:
        ModelError: no such module; the message lists the valid paths.
    """
    modules = dict(model.named_modules())
    if path not in modules:
        names = [n for n in modules if n]
        shown = ", ".join(names[:40]) + (f", … ({len(names)} in all)" if len(names) > 40 else "")
        raise ModelError(f"no module {path!r} in {type(model).__name__}; valid module paths: {shown}")
    return modules[path]


class _FunctionalReluWatch(TorchFunctionMode):
    """Raises ModelError when a ReLU is computed by a function call rather than an ``nn.ReLU`` module."""

    def __init__(self, stack: list[nn.Module], names: dict[int, str], method: str) -> None:
        super().__init__()
        self.stack = stack
        self.names = names
        self.method = method

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in _RELU_FUNCTIONS and not (self.stack and isinstance(self.stack[-1], nn.ReLU)):
            owner = self.stack[-1] if self.stack else None
            path = self.names.get(id(owner), "") if owner is not None else ""
            if owner is None or not path:
                where = "the model's own forward"
            else:
                where = f"module {path!r} ({type(owner).__name__}.forward)"
            raise ModelError(
                f"functional ReLU at {where}: {self.method} needs nn.ReLU modules to override the ReLU "
                "backward; replace F.relu/torch.relu/Tensor.relu with an nn.ReLU module, or use method "
                "'gradient'"
            )
        return func(*args, **(kwargs or {}))


@dataclass
class Truncated:
    """A model prepared by :func:`truncated`: call it on an input to get the target module's output.

    The forward stops right after the target module (runs whole when the target is None). With
    ``trace=True`` the leaf module calls of the latest forward are in :attr:`steps`, in execution
    order, and every module's (first) output in :attr:`outputs`, by ``named_modules()`` path.
    """

    model: nn.Module
    target: nn.Module | None
    watch: _FunctionalReluWatch | None
    stack: list[nn.Module]
    steps: list[Step] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    _captured: list[Any] = field(default_factory=list)

    def run(self, x: Tensor) -> None:
        """Run the forward on ``x`` until the target (or a :func:`stop_after` hook) ends it."""
        self._captured.clear()
        self.steps.clear()
        self.outputs.clear()
        self.stack.clear()
        try:
            if self.watch is not None:
                with self.watch:
                    result = self.model(x)
            else:
                result = self.model(x)
            if self.target is None:
                self._captured.append(result)
        except StopForward:
            pass

    def __call__(self, x: Tensor) -> Tensor:
        """The target's output for input ``x`` (the model's output when the target is None)."""
        self.run(x)
        if not self._captured:
            raise ModelError(f"module {type(self.target).__name__} was not called in the model's forward")
        out = self._captured[0]
        if isinstance(out, tuple | list) and len(out) == 1:
            out = out[0]
        if not isinstance(out, Tensor):
            raise ModelError(f"the output of {type(self.target).__name__} is not a single tensor")
        return out


@contextmanager
def truncated(
    model: nn.Module, target: nn.Module | None, method: str = "gradient", *, trace: bool = False
) -> Iterator[Truncated]:
    """Prepare ``model`` so that calling the result runs the forward up to ``target`` only.

    For ``method`` ``"deconvnet"`` and ``"guided"`` every ``nn.ReLU`` module's output is replaced by
    a custom autograd Function with that method's backward rule, and functional ReLUs raise
    :class:`~sitegen.errors.ModelError`. ReLU modules are made out-of-place for the duration (an in-place
    ReLU, as in torchvision alexnet/vgg, would feed autograd's own ReLU backward into the graph) and
    their flags restored on exit.

    Args:
        model: the network (its mode and weights are left as they are).
        target: the submodule whose output is wanted (None: the model's output, no truncation).
        method: one of :data:`METHODS`.
        trace: record leaf module calls and module outputs of each forward (:attr:`Truncated.steps`,
            :attr:`Truncated.outputs`).

    Yields:
        The prepared forward.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    inplace = [m.inplace for m in relus]
    stack: list[nn.Module] = []
    watch = None
    if method in _OVERRIDES:
        watch = _FunctionalReluWatch(stack, {id(m): n for n, m in model.named_modules()}, method)
    prepared = Truncated(model, target, watch, stack)
    with ExitStack() as hooks:
        for m in relus:
            m.inplace = False
        hooks.callback(_restore_inplace, relus, inplace)
        if method in _OVERRIDES:
            _override_relus(relus, _OVERRIDES[method], hooks)
            _push_module_stack(model, stack, hooks)
        if trace:
            _trace_leaves(model, prepared.steps, hooks)
            _record_outputs(model, prepared.outputs, hooks)

        def capture(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            prepared._captured.append(output)
            raise StopForward

        # registered last, so it sees the output after the ReLU override of a ReLU target
        if target is not None:
            hooks.callback(target.register_forward_hook(capture).remove)
        yield prepared


def _override_relus(relus: Sequence[nn.ReLU], fn: type[torch.autograd.Function], hooks: ExitStack) -> None:
    """Make every ReLU module compute ``fn``: a plain ``nn.ReLU`` gets ``fn`` as its forward (computing the
    ReLU once, not twice: elementwise passes over big maps are not free, shared/PERFORMANCE.md); a
    subclass keeps its forward and has its output replaced by a forward hook."""

    def forward(x: Tensor) -> Tensor:
        return fn.apply(x)

    def replace_output(module: nn.Module, args: tuple[Any, ...], output: Any) -> Tensor:
        return fn.apply(args[0])

    for m in relus:
        if type(m) is nn.ReLU:
            saved = m.__dict__.get("forward")
            m.forward = forward  # type: ignore[method-assign,assignment]
            hooks.callback(_restore_forward, m, saved)
        else:
            hooks.callback(m.register_forward_hook(replace_output).remove)


def _restore_forward(module: nn.Module, saved: Any) -> None:
    if saved is None:
        del module.forward
    else:
        module.forward = saved  # type: ignore[method-assign]


def _restore_inplace(relus: Sequence[nn.ReLU], flags: Sequence[bool]) -> None:
    for m, flag in zip(relus, flags, strict=True):
        m.inplace = flag


def _push_module_stack(model: nn.Module, stack: list[nn.Module], hooks: ExitStack) -> None:
    """Keep ``stack`` = the modules whose forward is running (to tell module ReLUs from functional ones)."""

    def push(module: nn.Module, args: tuple[Any, ...]) -> None:
        stack.append(module)

    def pop(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if stack and stack[-1] is module:
            stack.pop()

    for m in model.modules():
        hooks.callback(m.register_forward_pre_hook(push).remove)
        # prepend: pop before the override hook runs, whose Function.apply is no ReLU call anyway
        hooks.callback(m.register_forward_hook(pop, prepend=True).remove)


def _trace_leaves(model: nn.Module, steps: list[Step], hooks: ExitStack) -> None:
    def pre(path: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            versions = tuple(a._version if isinstance(a, Tensor) else -1 for a in args)
            steps.append(Step(path, module, args, versions))

        return hook

    def post(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        step = steps[-1]
        step.output = output
        step.output_version = output._version if isinstance(output, Tensor) else -1

    for path, m in model.named_modules():
        if next(m.children(), None) is None:
            hooks.callback(m.register_forward_pre_hook(pre(path)).remove)
            hooks.callback(m.register_forward_hook(post).remove)


@contextmanager
def forward_hook(module: nn.Module, hook: Callable[..., Any]) -> Iterator[None]:
    """``module.register_forward_hook(hook)`` for the block, removed on the way out (errors too)."""
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def stop_after(modules: Sequence[nn.Module]) -> Iterator[None]:
    """End the forward (:class:`StopForward`) as soon as every one of ``modules`` has run once."""
    pending = {id(m) for m in modules}

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        pending.discard(id(module))
        if not pending:
            raise StopForward

    with ExitStack() as hooks:
        for m in modules:
            hooks.callback(m.register_forward_hook(hook).remove)
        yield


def _record_outputs(model: nn.Module, outputs: dict[str, Any], hooks: ExitStack) -> None:
    def record(path: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            outputs.setdefault(path, output)

        return hook

    for path, m in model.named_modules():
        hooks.callback(m.register_forward_hook(record(path)).remove)


@contextmanager
def padding_off(modules: Sequence[nn.Module], *, rows: bool, cols: bool) -> Iterator[None]:
    """Set the padding of conv/pool ``modules`` to 0 along rows and/or columns for the duration.

    Used for the "valid" receptive-field crops: a unit whose receptive field lies inside the image
    never reads padding, so on an input cropped to exactly that field the network can run unpadded
    and computes just the unit's dependency cone (see :mod:`sitegen.analyses._crop`).
    """
    saved: list[Any] = [m.padding for m in modules]
    try:
        if rows or cols:
            for m in modules:
                p = _pair(m.padding)  # type: ignore[arg-type]
                setattr(m, "padding", (0 if rows else p[0], 0 if cols else p[1]))  # noqa: B010 (typing)
        yield
    finally:
        for m, old in zip(modules, saved, strict=True):
            setattr(m, "padding", old)  # noqa: B010 (typing)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))
