"""Arrow <-> NumPy for the stage functions, in one place: columns read into arrays with errors that name
the table and the column, and arrays written back as the contract's fixed-size vector columns.

The stage functions take whole tables from the store (possibly with ``partition_key`` and extra columns);
these helpers check what is needed and ignore the rest. A stage that wants its own error type passes
``error=`` (``lib/motion/arrow.py`` does, for the motion and captions stages).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ego_assets.lib import schemas


class ArrowInputError(ValueError):
    """An input table is missing a column or holds values of the wrong shape."""


def require(table: pa.Table, name: str, columns: list[str], error: type[Exception] = ArrowInputError) -> None:
    if not isinstance(table, pa.Table):
        raise error(f"{name}: expected a pyarrow Table, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise error(f"{name}: missing column(s) {missing}; has {table.column_names}")


def scalar(table: pa.Table, column: str, dtype=np.float64, fill=None,
           error: type[Exception] = ArrowInputError) -> np.ndarray:
    """A scalar column as a 1-D array; nulls become ``fill`` (an error when ``fill`` is None)."""
    col = table.column(column)
    if col.null_count:
        if fill is None:
            raise error(f"column {column!r} has {col.null_count} null value(s)")
        col = col.fill_null(fill)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=dtype)


def vectors(table: pa.Table, column: str, n: int, table_name: str = "table",
            error: type[Exception] = ArrowInputError) -> np.ndarray:
    """A fixed-size (or list) vector column as an (N, n) float64 array."""
    col = table.column(column)
    if col.null_count:
        raise error(f"{table_name}.{column}: {col.null_count} null vector(s)")
    if table.num_rows == 0:
        return np.zeros((0, n))
    arr = col.combine_chunks()
    if not (pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type)
            or pa.types.is_large_list(arr.type)):
        raise error(f"{table_name}.{column}: expected a vector column, got {arr.type}")
    flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
    if flat.size != table.num_rows * n:
        raise error(f"{table_name}.{column}: expected {n} values per row, got "
                    f"{flat.size / max(table.num_rows, 1):.1f} on average")
    return flat.reshape(table.num_rows, n)


def fixed(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """Rows of ``type_.list_size`` values (any array whose size is a multiple of it) -> a
    FixedSizeListArray of ``type_``."""
    values = np.ascontiguousarray(values, dtype=type_.value_type.to_pandas_dtype())
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type_.value_type),
                                             type_.list_size)


def schema_without_key(table: str) -> pa.Schema:
    """The contract schema of ``table`` without ``partition_key`` (the wiring adds it with conform)."""
    sch = schemas.TABLES[table].schema
    return pa.schema([f for f in sch if f.name != "partition_key"])
