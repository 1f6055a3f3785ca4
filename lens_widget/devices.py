"""Where a module runs and how to hold its weights for a block of work, with or without
accelerate's big-model hooks (``device_map``, CPU and disk offload).

With offload, a module's parameters sit on the ``meta`` device and its ``_hf_hook`` loads them
for each call. Reading ``module.weight`` directly then finds no data: code that decodes outside
the model's own forward must hold the weights with :func:`materialized` (accelerate's
``align_module_device``) for the whole block of work, and never ``.to()`` the model.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

__all__ = ["execution_device", "materialized", "is_offloaded"]


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on: its accelerate hook's execution device, else the device
    of its first parameter that holds data, else the CPU."""
    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def is_offloaded(module: nn.Module) -> bool:
    """True when accelerate keeps ``module``'s own weights off-device (on ``meta``) between calls."""
    hook = getattr(module, "_hf_hook", None)
    return bool(getattr(hook, "offload", False))


@contextlib.contextmanager
def materialized(*modules: nn.Module | None) -> Iterator[None]:
    """Hold the weights of ``modules`` on their execution devices for the block (no-op for
    modules that are not offloaded)."""
    with contextlib.ExitStack() as stack:
        for m in modules:
            if m is not None and any(is_offloaded(sub) for sub in m.modules()):
                from accelerate.utils import align_module_device

                for sub in m.modules():
                    if is_offloaded(sub):
                        stack.enter_context(align_module_device(sub))
        yield
