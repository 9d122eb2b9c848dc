"""The Arrow helpers of :mod:`ego_assets.lib.arrow` with the motion and captions stages' error type
(:class:`MotionInputError`), plus their frames-table reader."""

from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa

from ego_assets.lib import arrow
from ego_assets.lib.arrow import fixed, schema_without_key

__all__ = ["MotionInputError", "require", "scalar", "vectors", "fixed", "schema_without_key", "frame_times"]


class MotionInputError(arrow.ArrowInputError):
    """An input table of the motion / captions stages is missing something or is inconsistent."""


require = partial(arrow.require, error=MotionInputError)
scalar = partial(arrow.scalar, error=MotionInputError)
vectors = partial(arrow.vectors, error=MotionInputError)


def frame_times(frames: pa.Table) -> dict[int, float]:
    require(frames, "frames", ["frame_index", "t_s"])
    fi = scalar(frames, "frame_index", np.int64)
    t = scalar(frames, "t_s")
    if len(np.unique(fi)) != len(fi):
        raise MotionInputError("frames: duplicate frame_index values")
    return dict(zip(fi.tolist(), t.tolist()))
