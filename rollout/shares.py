"""Shares of devices (no Django): stored as whole basis points, read by people in percent.

A share is a number of the `BUCKETS` = 10 000 hash buckets (`rollout.hashing`), so one basis
point is 0.01 % of devices. Stage plans are written in percent, the API also reports a share as
a fraction of devices, and the admin shows "5 %". Every conversion between those is here.
"""

from decimal import Decimal

from .hashing import BUCKETS

# Every device, in basis points (100 %).
ALL_DEVICES = BUCKETS
BASIS_POINTS_PER_PERCENT = BUCKETS // 100


def fraction(basis_points: int) -> float:
    """The share as a fraction of devices: 500 → 0.05."""
    return basis_points / BUCKETS


def percent(basis_points: int) -> float:
    """The share in percent: 500 → 5.0, 1 → 0.01."""
    return basis_points / BASIS_POINTS_PER_PERCENT


def percent_text(basis_points: int) -> str:
    """The share as people read it: 500 → "5 %", 50 → "0.5 %", 10 000 → "100 %"."""
    return f"{percent(basis_points):g} %"


def basis_points_from_percent(value: Decimal) -> Decimal:
    """A share given in percent, in basis points, exactly: 0.05 → 5, 0.005 → 0.5.

    Not rounded: whether a fraction of a basis point is an error is the caller's to say.
    """
    return value * BASIS_POINTS_PER_PERCENT
