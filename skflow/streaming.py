"""Data sources larger than memory, read chunk by chunk for ``fit``.

``FlowEstimator.fit`` accepts a :class:`ParquetSource` (a Parquet file or a
folder of them, read one row group at a time with pyarrow) or a
:class:`MemmapSource` (a NumPy array on disk, ``np.load(..., mmap_mode="r")``
or ``np.memmap``). Memory then holds one shuffle buffer of rows plus the
held-out validation rows, never the table.

How such a fit works (the details are in :meth:`FlowEstimator.fit`): one pass
over the chunks computes the column statistics (mean, standard deviation,
integer columns) and draws the held-out rows; every epoch then visits the
chunks in a fresh random order, ``buffer_rows`` rows' worth of chunks at a
time, and shuffles the rows of each buffer together. Rows of a chunk end up
in mini-batches with rows of other, randomly chosen chunks, which is what
makes a table sorted by some column (by time, by customer) train like a
shuffled one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChunkedSource", "MemmapSource", "ParquetSource"]


class ChunkedSource(ABC):
    """Rows of a table that are read a chunk at a time.

    Attributes
    ----------
    n_rows : int
        Rows in the table.
    n_features : int
        Columns read.
    feature_names : ndarray of str or None
        Column names, when the table has them.
    buffer_rows : int
        Rows shuffled together during training (several chunks' worth).
    """

    n_rows: int
    n_features: int
    feature_names: np.ndarray | None
    buffer_rows: int

    @property
    @abstractmethod
    def n_chunks(self) -> int:
        """Number of chunks."""

    @abstractmethod
    def chunk_rows(self, index: int) -> int:
        """Number of rows of chunk ``index``."""

    @abstractmethod
    def read_chunk(self, index: int) -> np.ndarray:
        """Rows of chunk ``index``, float64 of shape ``(chunk_rows(index), n_features)``."""


class ParquetSource(ChunkedSource):
    """A Parquet file, or a folder of Parquet files, read one row group at a time.

    Parameters
    ----------
    path : str or Path
        A ``.parquet`` file or a folder; a folder's ``*.parquet`` files
        (searched recursively, in sorted order) must share their columns.
    columns : list of str or None, default=None
        Columns to read; None reads all columns, which must then be numeric.
    buffer_rows : int, default=1_000_000
        Rows (whole row groups) shuffled together during training. Larger
        buffers mix rows of more row groups per mini-batch and cost memory:
        ``buffer_rows * n_features * 4`` bytes as float32.

    Notes
    -----
    Row groups are the unit of reading: write the file with row groups well
    below ``buffer_rows`` (pyarrow's ``row_group_size``) so that each buffer
    mixes several of them. Needs pyarrow (``pip install 'skflow[parquet]'``).
    """

    def __init__(self, path: str | Path, *, columns: list[str] | None = None, buffer_rows: int = 1_000_000) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise ImportError("Reading Parquet needs pyarrow: pip install 'skflow[parquet]'.") from error
        root = Path(path)
        if not root.exists():
            raise FileNotFoundError(f"No such Parquet file or folder: {path}")
        files = sorted(root.rglob("*.parquet")) if root.is_dir() else [root]
        if not files:
            raise ValueError(f"The folder {path} holds no *.parquet files.")
        self._files = [pq.ParquetFile(file) for file in files]
        self._paths = files
        schema = self._files[0].schema_arrow
        names = list(columns) if columns is not None else list(schema.names)
        missing = [name for name in names if name not in schema.names]
        if missing:
            raise ValueError(f"{files[0]} has no column(s) {', '.join(missing)}.")
        non_numeric = [
            name
            for name in names
            if not (_is_numeric(schema.field(name).type) or str(schema.field(name).type) == "bool")
        ]
        if non_numeric:
            raise ValueError(
                f"Parquet columns must be numeric; {', '.join(non_numeric)} are not. Pass columns= to read others."
            )
        for file, parquet in zip(files[1:], self._files[1:], strict=False):
            if not set(names) <= set(parquet.schema_arrow.names):
                raise ValueError(f"{file} lacks some of the columns {names} of {files[0]}.")
        self._columns = names
        self._pieces = [
            (file_index, group, parquet.metadata.row_group(group).num_rows)
            for file_index, parquet in enumerate(self._files)
            for group in range(parquet.metadata.num_row_groups)
            if parquet.metadata.row_group(group).num_rows > 0
        ]
        self.n_rows = sum(rows for _, _, rows in self._pieces)
        self.n_features = len(names)
        self.feature_names = np.asarray(names, dtype=object)
        self.buffer_rows = int(buffer_rows)
        self.path = root

    @property
    def n_chunks(self) -> int:
        return len(self._pieces)

    def chunk_rows(self, index: int) -> int:
        return self._pieces[index][2]

    def read_chunk(self, index: int) -> np.ndarray:
        file_index, group, n_rows = self._pieces[index]
        # A reader opened for this read only: a ParquetFile kept open holds on
        # to memory for every row group it has read (about 6 MB per 100,000
        # rows x 50 float32 columns, measured with pyarrow 26), so a long
        # stream through one would grow with the table.
        import pyarrow.parquet as pq

        with pq.ParquetFile(self._paths[file_index]) as parquet:
            table = parquet.read_row_group(group, columns=self._columns)
        out = np.empty((n_rows, self.n_features), dtype=np.float64)
        for j, name in enumerate(self._columns):
            out[:, j] = table.column(name).to_numpy(zero_copy_only=False)
        return out


class MemmapSource(ChunkedSource):
    """A 2-D array on disk (``np.memmap`` or ``np.load(path, mmap_mode="r")``), read in row blocks.

    Parameters
    ----------
    array : array-like of shape (n_rows, n_features) or str or Path
        A memory-mapped array, or the path of a ``.npy`` file to map.
    chunk_rows : int, default=65_536
        Rows per chunk.
    buffer_rows : int, default=1_000_000
        Rows (whole chunks) shuffled together during training.
    """

    def __init__(self, array: Any, *, chunk_rows: int = 65_536, buffer_rows: int = 1_000_000) -> None:
        if isinstance(array, (str, Path)):
            array = np.load(array, mmap_mode="r")
        if getattr(array, "ndim", None) != 2:
            raise ValueError(
                f"MemmapSource needs a 2-D array of shape (n_rows, n_features), got {type(array).__name__}."
            )
        if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
            raise ValueError(f"MemmapSource needs a numeric array, got dtype {array.dtype}.")
        self._array = array
        self._chunk = int(chunk_rows)
        self.n_rows, self.n_features = (int(size) for size in array.shape)
        self.feature_names = None
        self.buffer_rows = int(buffer_rows)

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_rows / self._chunk)

    def chunk_rows(self, index: int) -> int:
        return min(self._chunk, self.n_rows - index * self._chunk)

    def read_chunk(self, index: int) -> np.ndarray:
        start = index * self._chunk
        return np.asarray(self._array[start : start + self._chunk], dtype=np.float64)


def _is_numeric(arrow_type: Any) -> bool:
    from pyarrow import types

    return bool(types.is_integer(arrow_type) or types.is_floating(arrow_type) or types.is_decimal(arrow_type))
