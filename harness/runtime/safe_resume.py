"""Safe resume: mmengine checkpoints loadable with restricted unpickling."""
from __future__ import annotations


def _reduce_history_buffer(buffer):
    return type(buffer), (buffer._log_history, buffer._count_history, buffer.max_length)


def enable_safe_resume() -> None:
    """Make mmengine checkpoints loadable by ``torch.load(weights_only=True)``.

    mmengine 0.10.7 resumes with a plain ``torch.load``, which on torch >= 2.6 restricts
    unpickling to allow-listed types. Its checkpoints hold the message hub's ``HistoryBuffer``s
    and numpy arrays/scalars: those exact types are allow-listed here. A ``HistoryBuffer`` also
    pickles its class-level statistics functions through ``getattr``, a global no safe loader
    may allow; checkpoints saved by this process pickle it from its data alone instead
    (the functions are class attributes, registered again at import).
    """
    import copyreg

    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    torch.serialization.add_safe_globals(
        [HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
         *dtypes])
