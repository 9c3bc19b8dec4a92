"""Redis's long double, exactly: INCRBYFLOAT parses and prints as redis-server on x86-64 does.

Where it sits: under ``kvstrings.py`` (INCRBYFLOAT); imports nothing of netmux.

Redis reads the stored value and the increment with ``strtold`` into an x87
``long double`` (a 64-bit mantissa, exponents to 2**16383), adds them, and
stores ``"%.17Lf"`` of the sum with its trailing zeros cut. A Python float
would answer ``0.10000000000000001`` where Redis answers ``0.1``, and overflow
at 1e308 where Redis goes on to 1e4932. So the numbers here are exact
fractions rounded to the long double's 64 bits after every step, and printed
by exact decimal rounding, as glibc's printf does. The work is linear in the
number's digits (at most 5 KiB of them, Redis's own limit).
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional, Union

__all__ = ["parse_long_double", "format_long_double", "round_long_double"]

_MANTISSA_BITS = 64
_MIN_EXPONENT = -16445              # the smallest subnormal is 2**-16445
_OVERFLOW = Fraction(2) ** 16384    # the first power of two past the largest finite value
_MAX_CHARS = 5 * 1024               # Redis's MAX_LONG_DOUBLE_CHARS
_DECIMAL = re.compile(rb"([+-]?)(?:(\d+)\.?(\d*)|\.(\d+))(?:[eE]([+-]?\d+))?")
_HEXADECIMAL = re.compile(rb"([+-]?)0[xX](?:([0-9a-fA-F]+)\.?([0-9a-fA-F]*)|\.([0-9a-fA-F]+))(?:[pP]([+-]?\d+))?")
_INFINITY = re.compile(rb"[+-]?(?:inf|infinity)", re.IGNORECASE)

Number = Union[Fraction, float]     # a float only for the infinities


def round_long_double(value: Fraction) -> Number:
    """``value`` rounded to the nearest long double (ties to even); +-inf past the range."""
    if value == 0:
        return Fraction(0)
    magnitude = abs(value)
    exponent = max(_exponent_of(magnitude) - _MANTISSA_BITS + 1, _MIN_EXPONENT)
    scaled = magnitude / Fraction(2) ** exponent
    mantissa = round(scaled)                              # Fraction rounds half to even
    result = Fraction(mantissa) * Fraction(2) ** exponent
    if result >= _OVERFLOW:
        return float("inf") if value > 0 else float("-inf")
    return result if value > 0 else -result


def _exponent_of(magnitude: Fraction) -> int:
    """floor(log2(magnitude)) for a positive fraction, exactly."""
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    return exponent


def parse_long_double(text: bytes) -> Optional[Number]:
    """What Redis's ``string2ld`` accepts, as a long double; None where it refuses
    (empty, too long, leading space, trailing bytes, NaN, an overflow or underflow)."""
    if not text or len(text) >= _MAX_CHARS or text[:1].isspace():
        return None
    if _INFINITY.fullmatch(text):
        return float("-inf") if text.startswith(b"-") else float("inf")
    exact = _parse_exact(text)
    if exact is None:
        return None
    value = round_long_double(exact)
    if isinstance(value, float) or (value == 0 and exact != 0):
        return None                                   # strtold's ERANGE: Redis refuses it
    return value


def _parse_exact(text: bytes) -> Optional[Fraction]:
    match = _DECIMAL.fullmatch(text)
    base, scale = 10, 10
    if match is None:
        match = _HEXADECIMAL.fullmatch(text)
        base, scale = 16, 2
        if match is None:
            return None
    sign, whole, fraction, only_fraction, exponent = match.groups()
    if only_fraction is not None:
        whole, fraction = b"0", only_fraction
    digits = whole + fraction
    power = int(exponent or b"0") - len(fraction) * (4 if base == 16 else 1)
    if abs(power) > 100000:                            # far past the range either way
        return Fraction(0) if power < 0 else Fraction(_OVERFLOW)
    value = Fraction(int(digits, base)) * Fraction(scale) ** power
    return -value if sign == b"-" else value


def format_long_double(value: Fraction) -> bytes:
    """``"%.17Lf"`` of ``value``, trailing zeros and a bare point cut, "-0" as "0"
    (Redis's ``ld2string`` in its human mode)."""
    scaled = round(abs(value) * 10 ** 17)                 # exact, ties to even
    whole, fraction = divmod(scaled, 10 ** 17)
    text = b"%d" % whole
    fraction_digits = (b"%017d" % fraction).rstrip(b"0")
    if fraction_digits:
        text += b"." + fraction_digits
    if value < 0 and text != b"0":
        text = b"-" + text
    return text
