"""One hint evaluation written to a folder: tables (CSV) and the four figures.

``attn-tools hints`` calls `write_hint_run`; notebooks can call it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attn_tools.hints.evaluate import HintResult, evaluate_hints, item_attention
from attn_tools.hints.items import load_items

__all__ = ["write_hint_run", "write_hint_figures"]


def write_hint_figures(bundle: Any, result: HintResult, out: str | Path) -> list[Path]:
    """Write the flip matrix, the per-head hint-attention maps, the flip rates and (when an item
    flipped to the hint) the top head's attention on the first such item, as PNG files."""
    from attn_tools.viz.hints import (
        plot_flip_matrix,
        plot_flip_rates,
        plot_hint_attention_map,
        plot_hint_item_attention,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "flip_matrix.png", out / "flip_rates.png"]
    plot_flip_matrix(result.items, save=paths[0])
    plot_flip_rates(result.summary, save=paths[1])
    for score in ("hint_mass", "column_shift"):
        path = out / f"head_{score}.png"
        plot_hint_attention_map(result.head_attention, score=score, save=path)
        paths.append(path)
    flipped = result.items.index[result.items["flipped_to_hint"]].tolist()
    if flipped and result.items["eligible"].sum() > len(flipped):
        layer, head = result.top_head()
        tokens, att, hint_idx = item_attention(bundle, result, flipped[0], layer, head)
        path = out / "top_head_item.png"
        title = f"L{layer}H{head}, item {result.items.loc[flipped[0], 'item']}"
        plot_hint_item_attention(tokens, att, hint_idx, title=title, save=path)
        paths.append(path)
    return paths


def write_hint_run(
    model: str,
    items: str,
    out: str | Path,
    *,
    hint: str = "sycophancy",
    target: str = "wrong",
    cot: bool = False,
    limit: int | None = None,
    seed: int = 0,
    answer_from: str = "letter",
    batch_size: int = 8,
) -> tuple[HintResult, list[Path]]:
    """Load ``model`` and ``items``, run `evaluate_hints`, write tables and figures into ``out``.

    Returns the result and the files written (``summary.csv``, ``items.csv``,
    ``head_attention.csv`` and PNG figures).
    """
    from attn_tools.models import load_model

    chosen = load_items(items, limit=limit)
    bundle = load_model(model)
    result = evaluate_hints(
        bundle,
        chosen,
        hint=hint,
        target=target,
        cot=cot,
        seed=seed,
        answer_from=answer_from,  # type: ignore[arg-type]
        batch_size=batch_size,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in (
        ("summary", result.summary.assign(items_source=items)),
        ("items", result.items),
        ("head_attention", result.head_attention),
    ):
        path = out / f"{name}.csv"
        tmp = path.with_suffix(".csv.tmp")
        table.to_csv(tmp, index=False)
        tmp.replace(path)  # never leave a half-written table behind
        paths.append(path)
    paths += write_hint_figures(bundle, result, out)
    return result, paths
