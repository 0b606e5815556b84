"""Files for the ``attn-tools ablate`` and ``attn-tools lens`` commands: a table and a figure.

The command line only parses arguments and calls these; they compute with the public functions
of this package, write the table (CSV + Parquet, `report.write_table`) and the figure (PNG), and
return the table and the paths written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from attn_tools.interventions.ablation import AblationMethod, ablate_heads
from attn_tools.interventions.lens import logit_lens
from attn_tools.models import ModelBundle

__all__ = ["write_ablation", "write_lens"]


def write_ablation(
    bundle: ModelBundle,
    sentences: Sequence[str],
    out: str | Path,
    *,
    method: AblationMethod = "zero",
) -> tuple[pd.DataFrame, list[Path]]:
    """`ablate_heads` over every head, written as ``ablation_<model>_<method>.{csv,parquet,png}``
    with its entry in ``run.json`` (world size, backend, sentences per rank).

    Under ``torchrun`` every rank calls it: each measures its share of the sentences, every rank
    gets the single-process table, and rank 0 alone writes (the other ranks return no paths).
    """
    import time

    from attn_tools.distributed import rank_info, world, write_provenance
    from attn_tools.report import file_slug, write_table
    from attn_tools.viz.causal import plot_ablation_matrix

    w = world()
    t0 = time.perf_counter()
    table = ablate_heads(bundle, sentences, "all", method=method)
    ranks = rank_info(table.attrs["sentences_per_rank"][w.rank], time.perf_counter() - t0, w)
    if not w.is_main:  # one writer: rank 0
        return table, []
    stem = f"ablation_{file_slug(bundle.name)}_{method}"
    paths = write_table(table, out, stem)
    figure = Path(out) / f"{stem}.png"
    title = f"{bundle.name}: {method} ablation, {len(sentences)} sentences"
    plot_ablation_matrix(table, title=title, save=figure)
    paths.append(figure)
    entry = {
        "command": "ablate",
        "model": bundle.name,
        "fingerprint": bundle.fingerprint,
        "method": method,
        "measure": str(table["measure"].iloc[0]),
        "files": [str(p.relative_to(Path(out))) for p in paths],
    }
    record = write_provenance(out, stem, entry, ranks=ranks, n_sentences=len(sentences), w=w)
    return table, [*paths, record]


def write_lens(
    bundle: ModelBundle, text: str, out: str | Path, *, layers: int | None = None
) -> tuple[pd.DataFrame, list[Path]]:
    """`logit_lens` of one text, written as ``lens_<model>.{csv,parquet,png}``."""
    from attn_tools.report import file_slug, write_table
    from attn_tools.viz.causal import plot_logit_lens

    table = logit_lens(bundle, text)
    stem = f"lens_{file_slug(bundle.name)}"
    paths = write_table(table, out, stem)
    figure = Path(out) / f"{stem}.png"
    plot_logit_lens(table, layers=layers, title=f"{bundle.name}: logit lens", save=figure)
    return table, [*paths, figure]
