"""Emulated approximate products for the certified unembedding's tests (the CPU has no
float32-out half-precision ``mm``): an ideal tensor core, a truncating float32 accumulator, and
an adversary that injects errors up to the bound."""

from __future__ import annotations

import torch

from lens_widget import certified as C


def f64_product(a, w):
    """Exact products, float64 accumulation, rounded once to float32: an ideal tensor core."""
    return (a.double() @ w.double().T).float()


def truncating_product(a, w):
    """float32 accumulation in sequential order, every step rounded toward zero."""
    acc = torch.zeros(a.shape[0], w.shape[0], dtype=torch.float64)
    ad, wd = a.double(), w.double()
    for i in range(a.shape[1]):
        s = acc + ad[:, i : i + 1] * wd[:, i][None, :]  # exact: float32 + exact product, in float64
        y = s.float()
        over = y.double().abs() > s.abs()
        y = torch.where(over, torch.nextafter(y, torch.zeros_like(y)), y)
        acc = y.double()
    return acc.float()


def noisy_product(wmax, scale=1.0, worst=False, seed=0):
    """Exact product plus an error of up to ``scale`` times the product's own share of the bound."""
    g = torch.Generator().manual_seed(seed)

    def product(a, w):
        exact = a.double() @ w.double().T
        d = a.shape[1]
        share = C.gamma(C.TC_UNITS * d) * a.double().norm(dim=-1) * wmax  # [r]
        if worst:
            sign = torch.where(torch.rand(exact.shape, generator=g) < 0.5, -1.0, 1.0).double()
        else:
            sign = torch.rand(exact.shape, generator=g).double() * 2 - 1
        return (exact + scale * share[:, None] * sign).float()

    return product


