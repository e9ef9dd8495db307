"""exp that LLVM can vectorise, for the CPU kernels.

numba compiles `math.exp` to a call of libm's expf, one element at a time: a loop around it cannot use the
CPU's vector units. `exp_neg` is the same function written as plain arithmetic, so a `prange` loop over it
runs 8-16 lanes at once (docs/figures.md has GELU's timings with and without it).

For y <= 0 (all GELU's sigmoid needs; exp(-|t|) never overflows):

    y = -k ln2 + r,  k = round(-y / ln2) in 0..125,  |r| <= ln2 / 2
    exp(y) = 2^-k exp(r)

exp(r) is its Taylor series to r^7 (the remainder r^8/8! < 6e-9 for |r| <= 0.347). ln2 is split in a high
part with few bits (k ln2_hi is exact) and a low part (Cody and Waite), so r keeps its accuracy. 2^-k is
built from k's bits as a product of exact powers of two: selects and multiplies, which vectorise, where a
bit-cast of (127 - k) << 23 would need an integer-to-float reinterpretation numba cannot vectorise.
Measured relative error against float64 over [-87, 0]: 6.0e-8 (float32's own rounding is 6e-8).
Below -87, exp underflows float32's normal range; we clamp there (exp(-87) = 1.6e-38).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)        # 9 significant bits: k * _LN2_HI is exact for k < 2^15
_LN2_LO = np.float32(-2.12194440e-4)     # ln2 - _LN2_HI
_FLOOR = np.float32(-87.0)
_ONE, _HALF = np.float32(1.0), np.float32(0.5)
_C2, _C3, _C4 = np.float32(1 / 2), np.float32(1 / 6), np.float32(1 / 24)
_C5, _C6, _C7 = np.float32(1 / 120), np.float32(1 / 720), np.float32(1 / 5040)
_POW = tuple(np.float32(2.0 ** -(2 ** i)) for i in range(7))   # 2^-1, 2^-2, 2^-4, ..., 2^-64
_B0, _B1, _B2, _B3, _B4, _B5, _B6 = _POW


@njit(error_model="numpy", inline="always", fastmath=True)
def exp_neg(y):
    """exp(y) for float32 y <= 0, as vectorisable arithmetic (relative error ~6e-8)."""
    y = max(y, _FLOOR)
    kf = math.floor(-y * _LOG2E + _HALF)
    r = (y + kf * _LN2_HI) + kf * _LN2_LO
    p = ((((((_C7 * r + _C6) * r + _C5) * r + _C4) * r + _C3) * r + _C2) * r + _ONE) * r + _ONE
    k = np.int32(kf)
    s = _ONE
    s *= _B0 if (k & 1) else _ONE
    s *= _B1 if (k & 2) else _ONE
    s *= _B2 if (k & 4) else _ONE
    s *= _B3 if (k & 8) else _ONE
    s *= _B4 if (k & 16) else _ONE
    s *= _B5 if (k & 32) else _ONE
    s *= _B6 if (k & 64) else _ONE
    return p * s
