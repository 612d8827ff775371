"""What both gridding backends share: the representations, the exponent floor, the rotation
formula, the transform layout and the agreement bound between the backends.

Written once over an array namespace (``numpy`` or ``torch``), so the numpy builder and the
torch sampler compute rotations with the same expression, in the same order.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "BACKEND_AGREEMENT",
    "REPRESENTATIONS",
    "SMALLEST_EXPONENT",
    "Representation",
    "check_representation",
    "quaternion_matrix",
]

Representation = Literal["single", "repeated"]
#: ``single``: the unit cell, centred and randomly rotated; ``repeated``: a crop of the
#: periodic crystal.
REPRESENTATIONS: tuple[str, ...] = ("single", "repeated")

#: Gaussian exponents are clipped here: exp(-25) ~ 1e-11 of an atom's peak, far inside the
#: tolerance, and float32 products of factors above it never go subnormal (where the CPU
#: multiplies tens of times more slowly).
SMALLEST_EXPONENT = -25.0

#: The torch backend's density agrees with the numpy builder's within this fraction of the
#: grid's maximum (fp32 products, TF32 off); its species grids agree exactly.
BACKEND_AGREEMENT = 5e-5


def check_representation(representation: str) -> None:
    """Raise ``ValueError`` unless ``representation`` is one of :data:`REPRESENTATIONS`."""
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")


def quaternion_matrix(q: Any, xp: Any) -> Any:
    """``(..., 3, 3)`` rotation matrices of unit quaternions ``(..., 4)`` ordered ``(w, x, y, z)``.

    ``xp`` is the array namespace of ``q`` (``numpy`` or ``torch``); the expression is the same
    for both, so a quaternion gives bit-identical matrices on the two backends' CPUs.
    """
    w, x, y, z = (q[..., i] for i in range(4))
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)),
        (2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)),
        (2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)),
    )
    return xp.stack([xp.stack(row, -1) for row in rows], -2)
