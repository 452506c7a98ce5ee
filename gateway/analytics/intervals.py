"""Binomial confidence intervals."""

from __future__ import annotations

import math

# The two-sided 95% normal quantile, to the precision the stats contract names (docs: /v1/stats `ci`).
Z95 = 1.959964


def wilson(count: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the rate `count / n`: `(lower, upper)`, both within [0, 1].

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps a width at 0 and at `n` successes, which is
    where most rates of rare signals live.
    """
    if n <= 0:
        raise ValueError(f"a rate needs n > 0, got n={n}")
    if not 0 <= count <= n:
        raise ValueError(f"count must be within 0..n, got count={count}, n={n}")
    p = count / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    scale = 1 + z2 / n
    # At 0 and n successes the exact bound is 0 (or 1); the formula lands there up to rounding, so pin it.
    lower = 0.0 if count == 0 else (centre - half) / scale
    upper = 1.0 if count == n else (centre + half) / scale
    return lower, upper
