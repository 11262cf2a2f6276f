"""A batch's graph outputs as sparse rows: array operations over the top-k or non-zero arrays.

Each function returns (terms per row, columns, values), rows in batch order and columns ascending
within a row; batching.gather_rows puts a call's batches into input order. No step loops over rows
in Python, so assembling a batch costs about as much as copying its non-zeros.
"""

from __future__ import annotations

import numpy as np

Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # (terms per row, columns, values)


def rows_from_topk(values: np.ndarray, indices: np.ndarray, cut: float) -> Rows:
    """From TopK's [rows, k] values (descending) and indices: weights > cut, columns ascending."""
    keep = values > cut
    dropped = np.iinfo(np.int64).max
    cols = np.where(keep, indices, dropped)  # dropped entries sort last
    order = np.argsort(cols, axis=1, kind="stable")
    cols = np.take_along_axis(cols, order, axis=1)
    vals = np.take_along_axis(values, order, axis=1)
    keep = cols != dropped
    return keep.sum(axis=1), cols[keep], vals[keep]


def rows_from_nonzeros(coords: np.ndarray, values: np.ndarray, cut: float, rows: int) -> Rows:
    """From NonZero's [2, nnz] (row, column) coordinates and their values: weights > cut. NonZero is
    row-major, so columns already ascend within a row."""
    keep = values > cut
    row = coords[0][keep]
    return np.bincount(row, minlength=rows), coords[1][keep], values[keep]
