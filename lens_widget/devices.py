"""Where a module runs and how to hold its weights for a block of work, with or without
accelerate's big-model hooks (``device_map``, ``max_memory``, CPU and disk offload, several GPUs).

With offload, a module's parameters sit on the ``meta`` device and its ``_hf_hook`` loads them
for each call. Reading ``module.weight`` directly then finds no data: code that decodes outside
the model's own forward must hold the weights with :func:`materialized` (accelerate's
``align_module_device``, i.e. the hook's own load and release) for the whole block of work, and
never ``.to()`` the model.

A module's ``_hf_hook`` is an ``AlignDevicesHook`` or, when several were attached (``cpu_offload``
on a leaf module, ``dispatch_model`` over a module that already had one), a ``SequentialHook``
holding several; both are read here.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["execution_device", "materialized", "is_offloaded", "align_hooks"]


def align_hooks(module: nn.Module) -> list[Any]:
    """The accelerate hooks attached to ``module`` itself (a ``SequentialHook`` unpacked)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", None) or [hook])


def _as_device(dev: Any) -> torch.device:
    return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on: its accelerate hook's execution device, else the device
    of its first parameter that holds data, else the CPU."""
    for hook in align_hooks(module):
        dev = getattr(hook, "execution_device", None)
        if dev is not None:
            return _as_device(dev)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def _offloading_hooks(module: nn.Module) -> list[Any]:
    return [h for h in align_hooks(module) if getattr(h, "offload", False)]


def is_offloaded(module: nn.Module) -> bool:
    """True when accelerate keeps ``module``'s own weights off-device (on ``meta``) between calls."""
    return bool(_offloading_hooks(module))


@contextlib.contextmanager
def materialized(*modules: nn.Module | None) -> Iterator[None]:
    """Hold the weights of ``modules`` (and their submodules) on their execution devices for the
    block; a no-op for modules that are not offloaded. Each offloaded module is loaded once,
    by accelerate's own hook (``align_module_device``), however many of ``modules`` contain it."""
    seen: set[int] = set()
    with contextlib.ExitStack() as stack:
        for m in modules:
            if m is None:
                continue
            for sub in m.modules():
                hooks = _offloading_hooks(sub)
                if not hooks or id(sub) in seen:
                    continue
                seen.add(id(sub))
                if len(align_hooks(sub)) == 1:
                    from accelerate.utils import align_module_device

                    stack.enter_context(align_module_device(sub))
                else:  # a SequentialHook: align_module_device does not look inside one
                    for hook in hooks:
                        stack.enter_context(_held(sub, hook))
        yield


@contextlib.contextmanager
def _held(module: nn.Module, hook: Any) -> Iterator[None]:
    """What ``align_module_device`` does, for one hook of a ``SequentialHook``."""
    hook.pre_forward(module)
    try:
        yield
    finally:
        hook.post_forward(module, None)
