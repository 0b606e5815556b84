"""Partitioned Parquet: one table as a folder of Parquet files, one per value of a column.

Layout (hive style, which pyarrow, pandas, DuckDB, Polars and Spark all read as one table)::

    <folder>/_table.json            column order and dtypes, partition column, row count
    <folder>/layer=0/part-0.parquet
    <folder>/layer=1/part-0.parquet
    ...

`read_partitioned` gives back the very table that was written (same columns, order, dtypes and
rows): a ``_row`` column keeps the original row order inside the files. A reader that wants one
layer opens one file (``layer=3/part-0.parquet``) without touching the others.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

__all__ = ["read_partitioned", "write_partitioned"]

_META = "_table.json"
_ROW = "_row"


def write_partitioned(table: pd.DataFrame, folder: str | Path, *, by: str = "layer") -> Path:
    """Write ``table`` under ``folder`` as one Parquet file per value of column ``by``.

    The folder is written beside its final place and renamed into it, so a reader never sees
    half a table; an older table in ``folder`` is replaced.

    Raises:
        ValueError: ``by`` is not a column, or ``table`` has a column named ``_row``.
    """
    folder = Path(folder)
    if by not in table.columns:
        raise ValueError(
            f"cannot partition by {by!r}: the table's columns are {list(table.columns)}. "
            "Fix: pass by= one of them (layer for score tables)."
        )
    if _ROW in table.columns:
        raise ValueError(f"the table already has a {_ROW!r} column, which the layout reserves")
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    flat = table.reset_index(drop=True)
    flat.insert(0, _ROW, range(len(flat)))
    for value, part in flat.groupby(by, sort=True, dropna=False):
        target = tmp / f"{by}={value}"
        target.mkdir()
        part.drop(columns=[by]).to_parquet(target / "part-0.parquet", index=False)
    meta = {
        "by": by,
        "columns": [str(c) for c in table.columns],
        "dtypes": {str(c): str(t) for c, t in table.dtypes.items()},
        "rows": len(table),
    }
    (tmp / _META).write_text(json.dumps(meta, indent=2))
    old = folder.with_name(folder.name + f".old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_partitioned(folder: str | Path) -> pd.DataFrame:
    """The table `write_partitioned` wrote in ``folder``, identical to the one written.

    Raises:
        FileNotFoundError: ``folder`` holds no partitioned table.
        ValueError: the files hold fewer or more rows than were written (a damaged table).
    """
    folder = Path(folder)
    meta_path = folder / _META
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a partitioned table (no {_META}). Fix: pass a folder written by "
            "write_partitioned, e.g. <out>/parquet/scores_<model>_jsd."
        )
    meta = json.loads(meta_path.read_text())
    by = meta["by"]
    parts = []
    for path in sorted(folder.glob(f"{by}=*/*.parquet")):
        part = pd.read_parquet(path)
        part[by] = path.parent.name.split("=", 1)[1]
        parts.append(part)
    if not parts and meta["rows"] == 0:
        return pd.DataFrame({c: pd.Series(dtype=meta["dtypes"][c]) for c in meta["columns"]})
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(table) != meta["rows"]:
        raise ValueError(
            f"{folder} holds {len(table)} rows, {meta['rows']} were written. Fix: write the "
            "table again; a partition file is missing or extra."
        )
    table[by] = table[by].astype(meta["dtypes"][by])
    table = table.sort_values(_ROW, kind="stable").drop(columns=[_ROW])
    return table[meta["columns"]].reset_index(drop=True)
