"""FAB's step: the smallest move from a point onto a hyperplane, staying inside the [0, 1] box.

For each row, given the point t, the hyperplane w·z = b, find the d of least
L∞ (`projection_linf`) or L2 (`projection_l2`) norm with w·(t + d) = b and
0 ≤ t + d ≤ 1, or the closest one can come. Both search the breakpoints of a
piecewise-linear function of the step length by bisection, as FAB's
authors solve it (Croce & Hein, ICML 2020, appendix); every row is solved at
once.
"""

import math

import numpy as np

# Weights smaller than this leave their coordinate alone (L2), as in the original.
ZERO_WEIGHT = 1e-8
LARGE = 1e12


def projection_linf(points, weights, offsets):
    """The least-L∞ steps `(n, D)` from `points` onto `weights · z = offsets` inside [0, 1]."""
    t, w, b = points.astype("float64"), weights.astype("float64").copy(), offsets.astype("float64").copy()
    rows = np.arange(len(t))
    sign = np.where(np.sum(w * t, axis=1) - b >= 0, 1.0, -1.0)
    w *= sign[:, None]
    b *= sign
    toward_zero = (w < 0).astype("float64")
    d = (toward_zero - t) * (w != 0)
    p = toward_zero - t * (2 * toward_zero - 1)
    order = np.argsort(p, axis=1, kind="stable")
    b = b - np.sum(w * t, axis=1)
    b0 = np.sum(w * d, axis=1)
    reversed_order = order[:, ::-1]
    w_sorted = np.take_along_axis(w, reversed_order, axis=1)
    s = np.cumsum(np.abs(w_sorted), axis=1)
    sb = np.cumsum(-w_sorted * np.take_along_axis(d, reversed_order, axis=1), axis=1) + b0[:, None]
    b2 = sb[:, -1] - s[:, -1] * p[rows, order[:, 0]]
    whole_box = b - b2 > 0
    search = (b - b0 > 0) & ~whole_box
    low = _bisect(search, t.shape[1], lambda middle, chosen: b[chosen] - (
        sb[chosen, middle] - s[chosen, middle] * p[chosen, order[chosen, t.shape[1] - 1 - middle]]) > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if whole_box.any():
            step = np.maximum((b[whole_box] - sb[whole_box, -1]) / -s[whole_box, -1], 0)[:, None]
            d[whole_box] = (2 * toward_zero[whole_box] - 1) * step
        step = np.maximum((b[search] - sb[search, low]) / -s[search, low], 0)[:, None]
    d[search] = (np.minimum(step, d[search]) * toward_zero[search]
                 + np.maximum(-step, d[search]) * (1 - toward_zero[search]))
    return d * (w != 0)


def projection_l2(points, weights, offsets):
    """The least-L2 steps `(n, D)` from `points` onto `weights · z = offsets` inside [0, 1]."""
    t, w, b = points.astype("float64"), weights.astype("float64").copy(), offsets.astype("float64")
    c = np.sum(w * t, axis=1) - b
    sign = np.where(c >= 0, 1.0, -1.0)
    w *= sign[:, None]
    c = c * sign
    live = np.abs(w) > ZERO_WEIGHT
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.clip(np.maximum(t / w, (t - 1) / w), -LARGE, LARGE)
    r[~live] = LARGE
    r[r == -LARGE] = LARGE
    order = np.argsort(r, axis=1, kind="stable")
    rs = np.take_along_axis(r, order, axis=1)
    rs2 = np.pad(rs[:, 1:], ((0, 0), (0, 1)))
    rs[rs == LARGE] = 0
    rs2[rs2 == LARGE] = 0
    w3s = np.take_along_axis(w**2, order, axis=1)
    w5 = np.sum(w3s, axis=1, keepdims=True)
    ws = w5 - np.cumsum(w3s, axis=1)
    d = -(r * w) * live
    s = np.concatenate([-w5 * rs[:, :1], np.cumsum((-rs2 + rs) * ws, axis=1) - w5 * rs[:, :1]], axis=1)
    beyond = s[:, 0] + c < 0
    reached = np.sum(d * w, axis=1) + c > 0
    search = ~(beyond | reached)
    low = _bisect(search, t.shape[1], lambda middle, chosen: s[chosen, middle] + c[chosen] > 0)
    if beyond.any():
        d[beyond] = -(c[beyond] / w5[beyond, 0])[:, None] * w[beyond]
    if search.any():
        chosen = np.flatnonzero(search)
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = (s[chosen, low] + c[chosen]) / ws[chosen, low] + rs[chosen, low]
        alpha[ws[chosen, low] == 0] = 0
        inside = (alpha[:, None] > r[chosen]).astype("float64")
        d[chosen] = d[chosen] * inside - alpha[:, None] * w[chosen] * (1 - inside)
    return d * live


def _bisect(search, size, goes_up):
    """Per row of `search`, the breakpoint index where `goes_up(middle, rows)` last held, by bisection."""
    chosen = np.flatnonzero(search)
    low, high = np.zeros(len(chosen)), np.full(len(chosen), size - 1.0)
    for _ in range(math.ceil(math.log2(size))):
        middle = np.floor((low + high) / 2)
        up = goes_up(middle.astype(int), chosen)
        low, high = np.where(up, middle, low), np.where(up, high, middle)
    return low.astype(int)
