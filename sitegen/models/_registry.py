"""Architecture names → builders (the torchvision ``models/_api.py`` ``register_model`` pattern).

Three spellings of ``arch`` (see ``NetworkSpec.arch``):

- ``zoo:<name>``: a built-in small net registered with :func:`register_arch` (``sitegen.models.zoo``);
- ``torchvision:<name>`` or a bare ``<name>``: any classification model of
  ``torchvision.models.list_models(module=torchvision.models)``;
- ``package.module:callable``: the user's own builder, called with ``num_classes=`` when it accepts it.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from sitegen.errors import ModelError

ZOO = "zoo"
TORCHVISION = "torchvision"

_ARCHS: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_arch(name: str) -> Callable[[F], F]:
    """Register a built-in builder as ``zoo:<name>``.

    Args:
        name: the zoo name, without the ``zoo:`` prefix.

    Returns:
        A decorator that registers the builder and returns it unchanged.

    Raises:
        ValueError: ``name`` is already registered (a bug, never user input).

    Example:
        >>> @register_arch("tiny")  # doctest: +SKIP
        ... def tiny(*, num_classes: int = 1000) -> nn.Module: ...
    """

    def wrapper(fn: F) -> F:
        if name in _ARCHS:
            raise ValueError(f"an architecture is already registered as 'zoo:{name}'")
        _ARCHS[name] = fn
        return fn

    return wrapper


def _zoo_names() -> list[str]:
    import sitegen.models.zoo  # noqa: F401  (registers the built-in nets on import)

    return sorted(_ARCHS)


@functools.cache
def _torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def get_arch(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``zoo:<name>`` (the prefix is optional here).

    Raises:
        ModelError: no such zoo net (with the closest name).
    """
    bare = name.removeprefix(f"{ZOO}:")
    if bare not in _zoo_names():
        raise ModelError(_unknown(name, ZOO, bare))
    return _ARCHS[bare]


def list_archs() -> list[str]:
    """Every architecture name a spec may use (besides user callables): ``zoo:*``, then ``torchvision:*``."""
    return [f"{ZOO}:{n}" for n in _zoo_names()] + [f"{TORCHVISION}:{n}" for n in _torchvision_names()]


def parse_arch(arch: str) -> tuple[str, str]:
    """Split an arch string into ``(namespace, name)``: namespace is ``zoo``, ``torchvision`` or ``user``.

    A bare name is torchvision's; ``package.module:callable`` is ``("user", "package.module:callable")``.
    """
    prefix, sep, rest = arch.partition(":")
    if not sep:
        return TORCHVISION, arch
    if prefix in (ZOO, TORCHVISION):
        return prefix, rest
    return "user", arch


def torchvision_name(arch: str) -> str | None:
    """The torchvision model name of ``arch``, or ``None`` for zoo and user architectures."""
    namespace, name = parse_arch(arch)
    return name if namespace == TORCHVISION else None


def check_arch(arch: str) -> str | None:
    """Check an architecture name without building it.

    Args:
        arch: as written in the spec.

    Returns:
        ``None`` when ``arch`` can be built, else a one-line message such as
        ``unknown architecture 'alexnett' (did you mean 'alexnet'?)``. A user module is imported
        (that is the only way to check it); an import failure names the module and the error.
    """
    namespace, name = parse_arch(arch)
    if namespace == ZOO:
        return None if name in _zoo_names() else _unknown(arch, ZOO, name)
    if namespace == TORCHVISION:
        return None if name in _torchvision_names() else _unknown(arch, TORCHVISION, name)
    try:
        _user_builder(arch)
    except ModelError as e:
        return str(e)
    return None


def _unknown(arch: str, namespace: str, name: str) -> str:
    """``unknown architecture ...`` with the closest known name, spelled in the user's prefix style."""
    explicit = arch.startswith((f"{ZOO}:", f"{TORCHVISION}:"))  # keep the user's prefix style
    spell = {
        ZOO: lambda n: f"{ZOO}:{n}",
        TORCHVISION: (lambda n: f"{TORCHVISION}:{n}") if explicit else (lambda n: n),
    }
    same = _zoo_names() if namespace == ZOO else list(_torchvision_names())
    other_ns = TORCHVISION if namespace == ZOO else ZOO
    other = list(_torchvision_names()) if namespace == ZOO else _zoo_names()
    # the exact name in the other namespace (zoo:resnet18 -> torchvision:resnet18) and/or the closest name
    # in the user's namespace (stricter beside an exact match); the closest elsewhere when neither exists
    exact = name in other
    suggestions = [spell[other_ns](name)] if exact else []
    close = difflib.get_close_matches(name, same, n=1, cutoff=0.7 if exact else 0.6)
    suggestions += [spell[namespace](n) for n in close]
    if not suggestions:
        suggestions = [spell[other_ns](n) for n in difflib.get_close_matches(name, other, n=1)]
    if suggestions:
        return f"unknown architecture {arch!r} (did you mean {' or '.join(map(repr, suggestions))}?)"
    zoo = ", ".join(f"{ZOO}:{n}" for n in _zoo_names())
    return (
        f"unknown architecture {arch!r}; use one of {zoo}, a torchvision model name "
        "(torchvision.models.list_models()), or 'package.module:callable'"
    )


def _user_builder(arch: str) -> Callable[..., Any]:
    module_name, _, attr = arch.rpartition(":")
    if not module_name or not attr:
        raise ModelError(f"architecture {arch!r}: expected 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any failure while importing user code is a user problem, reported in one line
        raise ModelError(
            f"architecture {arch!r}: cannot import module {module_name!r}: {type(e).__name__}: {e}"
        ) from e
    fn = getattr(module, attr, None)
    if fn is None:
        public = [n for n in vars(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, public, n=1)
        hint = f" (did you mean {module_name}:{close[0]}?)" if close else ""
        raise ModelError(f"architecture {arch!r}: module {module_name!r} has no attribute {attr!r}{hint}")
    if not callable(fn):
        raise ModelError(f"architecture {arch!r}: {attr!r} is not callable")
    return fn


def _accepts_num_classes(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return False
    return any(p.name == "num_classes" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build_model(arch: str, num_classes: int, *, input_size: int | None = None) -> nn.Module:
    """Build an architecture with random weights and a ``num_classes``-way head.

    Args:
        arch: ``zoo:<name>``, ``torchvision:<name>``, a bare torchvision name, or ``package.module:callable``.
        num_classes: size of the final classifier layer. A user builder that does not take
            ``num_classes`` gets its final layer replaced when the size differs.
        input_size: side of the square input in px. Lazy modules (``nn.LazyLinear``, common in
            LeNet-style code) get their shapes from one dummy forward of this size, before the head
            is checked, weights are loaded or layers inspected; required when the module has any.

    Returns:
        The module in training mode (callers switch to eval after loading weights).

    Raises:
        ModelError: unknown architecture, or a user builder that fails or returns no ``nn.Module``.

    Example:
        >>> net = build_model("zoo:alexnet_small", num_classes=10)  # doctest: +SKIP
    """
    problem = check_arch(arch)
    if problem:
        raise ModelError(problem)
    namespace, name = parse_arch(arch)
    if namespace == ZOO:
        return _ARCHS[name](num_classes=num_classes)
    if namespace == TORCHVISION:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    fn = _user_builder(arch)
    try:
        module = fn(num_classes=num_classes) if _accepts_num_classes(fn) else fn()
    except Exception as e:  # user code: report it as input error with its own message
        raise ModelError(f"architecture {arch!r}: the builder failed: {type(e).__name__}: {e}") from e
    if not isinstance(module, nn.Module):
        raise ModelError(
            f"architecture {arch!r}: the builder returned {type(module).__name__}, not an nn.Module"
        )
    materialize(module, input_size, arch=arch)
    resize_head(module, num_classes)
    return module


def materialize(module: nn.Module, input_size: int | None, *, arch: str = "") -> bool:
    """Give lazy modules (``nn.LazyLinear``, ``nn.LazyConv2d``, ...) their shapes: one dummy forward.

    A lazy parameter has no shape until the first forward, so loading a checkpoint, resizing the head
    or reading the layer table would fail on it ("Can't access the shape of an uninitialized
    parameter"). The forward runs in eval mode without grad on zeros ``[2, 3, input_size, input_size]``
    (two images: a BatchNorm in train mode cannot take one), and the mode is restored.

    Returns:
        ``True`` if the module had lazy parameters or buffers (now materialized).

    Raises:
        ModelError: lazy modules but no ``input_size``, or a dummy forward that fails.
    """
    tensors = [*module.parameters(), *module.buffers()]
    if not any(is_lazy(t) for t in tensors):
        return False
    name = arch or type(module).__name__
    if input_size is None:
        raise ModelError(f"architecture {name!r} has lazy modules: an input size is needed to build it")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(2, 3, input_size, input_size))
    except Exception as e:  # user code: its own message, in one line
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(
            f"architecture {name!r}: a {input_size}x{input_size} px dummy forward (to give its lazy modules "
            f"their shapes) failed: {type(e).__name__}: {first}"
        ) from e
    finally:
        module.train(was_training)
    return True


def head_path(module: nn.Module) -> str | None:
    """Module path of the final classifier layer: the last ``nn.Linear`` (else the last 1×1 ``nn.Conv2d``,
    as in SqueezeNet), or ``None`` when there is neither."""
    last_conv = None
    last_linear = None
    for path, m in module.named_modules():
        if isinstance(m, nn.Linear):
            last_linear = path
        elif isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
            last_conv = path
    return last_linear if last_linear is not None else last_conv


def resize_head(module: nn.Module, num_classes: int) -> bool:
    """Replace the final classifier layer by a fresh one with ``num_classes`` outputs when it differs.

    Returns:
        ``True`` if the head was replaced (fine-tuning: it starts from random weights).
    """
    path = head_path(module)
    if path is None:
        return False
    old = module.get_submodule(path)
    new: nn.Module
    if isinstance(old, nn.Linear):
        if old.out_features == num_classes:
            return False
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        assert isinstance(old, nn.Conv2d)  # head_path only returns Linear or Conv2d
        if old.out_channels == num_classes:
            return False
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1, bias=old.bias is not None)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_path, _, child = path.rpartition(".")
    setattr(module.get_submodule(parent_path), child, new)
    return True
