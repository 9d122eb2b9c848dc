"""Small helpers to read Arrow columns into NumPy with errors that name the table and the column.

The stage functions take whole tables from the store (possibly with ``partition_key`` and extra columns);
these helpers check what is needed and ignore the rest.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ego_assets.lib import schemas


class MotionInputError(ValueError):
    """An input table of the motion / captions stages is missing something or is inconsistent."""


def require(table: pa.Table, name: str, columns: list[str]) -> None:
    if not isinstance(table, pa.Table):
        raise MotionInputError(f"{name}: expected a pyarrow Table, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise MotionInputError(f"{name}: missing column(s) {missing}; has {table.column_names}")


def scalar(table: pa.Table, column: str, dtype=np.float64, fill=None) -> np.ndarray:
    """A scalar column as a 1-D array; nulls become ``fill`` (an error when ``fill`` is None)."""
    col = table.column(column)
    if col.null_count:
        if fill is None:
            raise MotionInputError(f"column {column!r} has {col.null_count} null value(s)")
        col = col.fill_null(fill)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=dtype)


def vectors(table: pa.Table, column: str, n: int, table_name: str = "table") -> np.ndarray:
    """A fixed-size (or list) vector column as an (N, n) float64 array."""
    col = table.column(column)
    if col.null_count:
        raise MotionInputError(f"{table_name}.{column}: {col.null_count} null vector(s)")
    if table.num_rows == 0:
        return np.zeros((0, n))
    arr = col.combine_chunks()
    if not (pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type)
            or pa.types.is_large_list(arr.type)):
        raise MotionInputError(f"{table_name}.{column}: expected a vector column, got {arr.type}")
    flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
    if flat.size != table.num_rows * n:
        raise MotionInputError(f"{table_name}.{column}: expected {n} values per row, got "
                               f"{flat.size / max(table.num_rows, 1):.1f} on average")
    return flat.reshape(table.num_rows, n)


def fixed(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """(N, n) array -> FixedSizeListArray of ``type_``."""
    values = np.ascontiguousarray(values, dtype=type_.value_type.to_pandas_dtype())
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type_.value_type),
                                             type_.list_size)


def schema_without_key(table: str) -> pa.Schema:
    """The contract schema of ``table`` without ``partition_key`` (the wiring adds it with conform)."""
    sch = schemas.TABLES[table].schema
    return pa.schema([f for f in sch if f.name != "partition_key"])


def frame_times(frames: pa.Table) -> dict[int, float]:
    require(frames, "frames", ["frame_index", "t_s"])
    fi = scalar(frames, "frame_index", np.int64)
    t = scalar(frames, "t_s")
    if len(np.unique(fi)) != len(fi):
        raise MotionInputError("frames: duplicate frame_index values")
    return dict(zip(fi.tolist(), t.tolist()))
