"""A ``random.Random``'s stream of uniforms, drawn in blocks by numpy.

``random.Random.random()`` and numpy's legacy ``RandomState.random_sample`` are the same
generator (MT19937) and turn its words into a double the same way (53 bits from two words), so
a ``RandomState`` given a ``random.Random``'s state draws the very doubles ``random()`` would,
in the same order, a block at a time. The trace generator draws its calls this way: the same
calls as one ``random()`` per draw, bit for bit, without a Python call per draw. numpy keeps
``RandomState``'s stream fixed across its versions, as Python keeps ``random()``'s.

``math_map`` applies a ``math`` function element by element: numpy's own ``log``, ``exp`` and
``cos`` may differ from the C library's in the last bit, and the calls must be those
``random()`` and ``math`` give.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
"""A one-dimensional array of doubles."""


class Uniforms:
    """The uniforms on ``[0, 1)`` that ``rng.random()`` would return from its current state
    on (``rng`` itself is left as it is)."""

    def __init__(self, rng: random.Random) -> None:
        _, words, _ = rng.getstate()
        self._source = np.random.RandomState()  # the legacy stream, on purpose
        key = np.array(words[:-1], dtype=np.uint32)
        self._source.set_state(("MT19937", key, words[-1], 0, 0.0))  # no Gaussian cached

    def take(self, count: int) -> Floats:
        """The next ``count`` uniforms."""
        return self._source.random_sample(count)

    def mark(self) -> object:
        """Where the stream stands (for ``rewind``)."""
        return self._source.get_state()

    def rewind(self, mark: object, count: int) -> None:
        """Stand ``count`` uniforms after ``mark``: give back what was taken beyond them."""
        self._source.set_state(mark)  # type: ignore[arg-type]
        if count:
            self._source.random_sample(count)


def math_map(function: Callable[[float], float], values: Floats) -> Floats:
    """``function`` (a ``math`` function) of each value, computed by ``function`` itself."""
    return np.fromiter(map(function, values.tolist()), dtype=np.float64, count=len(values))
