"""Marks the model calls whose input gradient is differentiated again (docs/method.md §3)."""

import contextlib
import contextvars

_ACTIVE = contextvars.ContextVar("keras_robust_twice_differentiated", default=False)


@contextlib.contextmanager
def twice_differentiated():
    """Model calls traced inside are differentiated twice: the regulariser's.

    A layer whose first derivative TensorFlow differentiates slowly or
    inexactly (`keras_robust.FusedBatchNormalization`) takes its other path
    here.

    Example:

    >>> with twice_differentiated():
    ...     is_twice_differentiated()
    True
    >>> is_twice_differentiated()
    False
    """
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def is_twice_differentiated():
    """Whether the model call being traced sits inside `twice_differentiated()`."""
    return _ACTIVE.get()
