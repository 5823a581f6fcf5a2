"""Python mirror of the InjectFault kernel's splitmix64 draws, and its inverse (a seed for a chosen fault).

Why: campaigns need the exact Fault records the C++ kernel injects for a (seed, site), and
targeted campaigns need to make the kernel inject one chosen fault, which inverting the
generator gives without any search over seeds.
"""

from __future__ import annotations

import math

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MUL1 = 0xBF58476D1CE4E5B9
MUL2 = 0x94D049BB133111EB
SITE_MULT = 0xD1B54A32D192ED03
_MUL1_INV = pow(MUL1, -1, 1 << 64)
_MUL2_INV = pow(MUL2, -1, 1 << 64)


def mix(z: int) -> int:
    """The splitmix64 output function of a state (a bijection of 64-bit integers)."""
    z = ((z ^ (z >> 30)) * MUL1) & MASK64
    z = ((z ^ (z >> 27)) * MUL2) & MASK64
    return z ^ (z >> 31)


def _unshift(z: int, s: int) -> int:
    x = z
    for _ in range(64 // s + 1):
        x = z ^ (x >> s)
    return x & MASK64


def unmix(z: int) -> int:
    """Inverse of ``mix``: the state whose output is z."""
    x = _unshift(z & MASK64, 31)
    x = (x * _MUL2_INV) & MASK64
    x = _unshift(x, 27)
    x = (x * _MUL1_INV) & MASK64
    return _unshift(x, 30)


def site_state(seed: int, site: int) -> int:
    """Initial generator state of an InjectFault site: seed ^ (0xD1B54A32D192ED03 * (site + 1))."""
    return (seed & MASK64) ^ ((SITE_MULT * (site + 1)) & MASK64)


def to_int64(value: int) -> int:
    """A 64-bit unsigned integer as the signed int64 the graph input carries."""
    value &= MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


class SplitMix64:
    """The kernel's generator: ``next()`` and ``uniform01()`` consume draws exactly as the C++ does."""

    def __init__(self, state: int):
        self.state = state & MASK64

    @classmethod
    def for_site(cls, seed: int, site: int) -> "SplitMix64":
        return cls(site_state(seed, site))

    def next(self) -> int:
        self.state = (self.state + GOLDEN) & MASK64
        return mix(self.state)

    def uniform01(self) -> float:
        return (self.next() >> 11) * (1.0 / 9007199254740992.0)


def geometric_gap(u: float, rate: float) -> float:
    """floor(log(u) / log1p(-rate)), as the kernel computes the gap to the next faulty element."""
    return math.floor(math.log(u) / math.log1p(-rate))


def seed_for_first_draws(site: int, n: int, index: int, second_ok=None, max_tries: int = 1 << 20) -> int:
    """A seed whose first draw of ``site`` picks element ``index`` of n (and whose second draw,
    if ``second_ok`` is given, satisfies it), found by inverting splitmix64 (no seed search)."""
    if not 0 <= index < n:
        raise ValueError(f"index {index} out of range for {n} elements")
    k = site_state(0, site)
    j = 0
    while j < max_tries:
        z1 = index + n * j
        if z1 > MASK64:
            break
        s1 = unmix(z1)
        if second_ok is None or second_ok(mix((s1 + GOLDEN) & MASK64)):
            return to_int64(((s1 - GOLDEN) & MASK64) ^ k)
        j += 1
    raise ValueError(f"no seed found for element {index} of {n} at site {site}")
