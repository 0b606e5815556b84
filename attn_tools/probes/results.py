"""Run every probe on the built-in data and write tables, figures and ``analysis_results.json``.

`run_probes` is what ``attn-tools probe`` and notebook 07 call: one model, the built-in sets,
each probe once (attention is extracted once per text and cached), optional causal mediation for
decoders. `write_probe_results` writes the JSON summary: per probe the heads that pass BH q < α
(replicated ones first), their scores, and the metadata that made them (model, n, seed,
permutations, package versions).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd

from attn_tools.extract import SentenceAttention

__all__ = [
    "PROBES",
    "ProbeName",
    "ProbeRun",
    "head_entropy",
    "run_probes",
    "top_heads",
    "write_probe_results",
]

ProbeName = Literal["sentiment", "bias", "instruction", "neurons"]
#: the steps `run_probes` can skip; "neurons" is the per-head causal mediation (decoders only)
PROBES: tuple[str, ...] = get_args(ProbeName)
RESULTS_VERSION = 1


@dataclass
class ProbeRun:
    """What `run_probes` produced: probe tables, entropy, mediation and the settings."""

    model: str
    tables: dict[str, pd.DataFrame]
    entropy: pd.DataFrame | None
    mediation: pd.DataFrame | None
    settings: dict[str, object] = field(default_factory=dict)


def head_entropy(records: Iterable[SentenceAttention]) -> pd.DataFrame:
    """Mean attention entropy (bits) of every head: rows averaged within, then over sentences.

    Special-token query rows are left out. Returns ``layer, head, entropy_bits, n``.
    """
    total, count = None, 0
    for rec in records:
        rows = ~np.asarray(rec.special_mask, dtype=bool)
        att = rec.attention[:, :, rows].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -(np.where(att > 0, att * np.log2(att), 0.0)).sum(-1).mean(-1)
        total = ent if total is None else total + ent
        count += 1
    if total is None:
        raise ValueError("head_entropy needs at least one record. Fix: pass extract(...) output.")
    mean = total / count
    layer, head = np.divmod(np.arange(mean.size), mean.shape[1])
    return pd.DataFrame({"layer": layer, "head": head, "entropy_bits": mean.ravel(), "n": count})


def top_heads(table: pd.DataFrame, *, alpha: float = 0.05, k: int = 10) -> pd.DataFrame:
    """Heads with q < ``alpha``, replicated first, then by |effect|; at most ``k``."""
    sig = table[table.q_value < alpha].copy()
    sig["_abs"] = sig.effect.abs()
    sig = sig.sort_values(["replicated", "_abs"], ascending=[False, False])
    return sig.drop(columns="_abs").head(k)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("attn_tools", "numpy", "scipy", "pandas", "torch", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _json_ready(value: object) -> object:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else round(float(value), 6)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_probe_results(
    out: str | Path,
    tables: Mapping[str, pd.DataFrame],
    *,
    entropy: pd.DataFrame | None = None,
    mediation: pd.DataFrame | None = None,
    alpha: float = 0.05,
    k: int = 10,
    settings: Mapping[str, object] | None = None,
) -> Path:
    """Write ``analysis_results.json`` (and one CSV per table) into folder ``out``.

    JSON layout: ``{"version", "model", "alpha", "settings", "packages", "probes": {name:
    {"n", "n_permutations", "seed", "statistic", "n_significant", "n_replicated",
    "top_heads": [{layer, head, effect, ci_low, ci_high, p_value, q_value, replicated}]}},
    "mediation": {...} | null, "entropy_bits": [[...]] | null}``. Returns the JSON path.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    probes: dict[str, object] = {}
    model = None
    for name, table in tables.items():
        model = model or str(table.model.iloc[0])
        table.to_csv(folder / f"probe_{name}.csv", index=False)
        cols = ["layer", "head", "effect", "ci_low", "ci_high", "p_value", "q_value", "replicated"]
        top = top_heads(table, alpha=alpha, k=k)[cols]
        probes[name] = {
            "n": int(table.n.iloc[0]),
            "n_permutations": int(table.n_permutations.iloc[0]),
            "seed": int(table.seed.iloc[0]),
            "statistic": str(table.statistic.iloc[0]),
            "n_heads": len(table),
            "n_significant": int((table.q_value < alpha).sum()),
            "n_replicated": int(table.replicated.sum()),
            "top_heads": [
                {c: _json_ready(v) for c, v in row.items()} for row in top.to_dict("records")
            ],
        }
    med = None
    if mediation is not None:
        mediation.to_csv(folder / "mediation.csv", index=False)
        model = model or str(mediation.model.iloc[0])
        order = mediation.reindex(
            mediation.indirect_effect.abs().sort_values(ascending=False).index
        ).head(k)
        med = {
            "n": int(mediation.n.iloc[0]),
            "total_effect": _json_ready(mediation.total_effect.iloc[0]),
            "outcome": "logit(her) - logit(his) at the last prompt position",
            "top_heads": [
                {c: _json_ready(v) for c, v in row.items() if c not in ("model", "n")}
                for row in order.to_dict("records")
            ],
        }
    ent = None
    if entropy is not None:
        entropy.to_csv(folder / "entropy.csv", index=False)
        n_heads = int(entropy["head"].max()) + 1
        ent = np.round(entropy.entropy_bits.to_numpy().reshape(-1, n_heads), 4).tolist()
    doc = {
        "version": RESULTS_VERSION,
        "model": model,
        "alpha": alpha,
        "settings": {k2: _json_ready(v) for k2, v in (settings or {}).items()},
        "packages": _versions(),
        "probes": probes,
        "mediation": med,
        "entropy_bits": ent,
    }
    path = folder / "analysis_results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def _check_skip(skip: Iterable[str]) -> set[str]:
    skip = set(skip)
    bad = skip - set(PROBES)
    if bad:
        raise ValueError(f"unknown probe(s) to skip {sorted(bad)}. Fix: choose from {PROBES}.")
    return skip


def run_probes(
    bundle: object,
    *,
    skip: Sequence[str] = (),
    quick: bool = False,
    n_permutations: int | None = None,
    seed: int = 0,
    alpha: float = 0.05,
    out: str | Path | None = None,
    cache: bool | str = True,
) -> ProbeRun:
    """All probes on the built-in data for one model; with ``out``, tables, figures and JSON.

    Args:
        bundle: a `ModelBundle`.
        skip: steps to leave out, from `PROBES`.
        quick: fewer texts (80 sentiment, 30 pairs each, 8 mediation prompts) and 200
            permutations — for notebooks and smoke runs; the full run uses every text and 1000.
        n_permutations: overrides the permutations (and bootstrap resamples).
        seed, alpha: statistics seed and FDR level.
        out: a folder for ``probe_*.csv``, ``analysis_results.json`` and the figures.
    """
    from attn_tools.probes import data
    from attn_tools.probes.bias import bias_heads
    from attn_tools.probes.instruction import instruction_heads
    from attn_tools.probes.sentiment import sentiment_heads

    skip = _check_skip(skip)
    perms = n_permutations or (200 if quick else 1000)
    kw = {"n_permutations": perms, "n_bootstrap": perms, "seed": seed, "alpha": alpha}
    tables: dict[str, pd.DataFrame] = {}
    started = time.perf_counter()
    texts, labels = data.load_sentiment()
    if quick:  # every other sentence of each class keeps the balance and the topic pairs
        pick = [i for i in range(len(texts)) if i % 5 in (0, 2)]
        texts, labels = [texts[i] for i in pick], [labels[i] for i in pick]
    from attn_tools.probes.features import records_for

    records = records_for(bundle, texts, cache=cache)
    entropy = head_entropy(records)
    if "sentiment" not in skip:
        tables["sentiment"] = sentiment_heads(records, texts, labels, **kw)
    n_pairs = 30 if quick else None
    if "bias" not in skip:
        tables["bias"] = bias_heads(bundle, data.load_bias_pairs()[:n_pairs], cache=cache, **kw)
    if "instruction" not in skip:
        ins, pro = data.load_instruction_pairs()
        tables["instruction"] = instruction_heads(
            bundle, ins[:n_pairs], pro[:n_pairs], cache=cache, **kw
        )
    mediation = None
    if "neurons" not in skip and getattr(bundle, "kind", None) == "causal":
        from attn_tools.probes.mediation import mediation_heads

        prompts = data.load_bias_prompts()[: 8 if quick else None]
        mediation = mediation_heads(bundle, prompts, n_bootstrap=perms, seed=seed)
    settings = {
        "quick": quick,
        "n_permutations": perms,
        "n_bootstrap": perms,
        "seed": seed,
        "sentiment_texts": len(texts),
        "seconds": round(time.perf_counter() - started, 1),
    }
    run = ProbeRun(bundle.name, tables, entropy, mediation, settings)
    if out is not None:
        write_run(run, out, alpha=alpha)
    return run


def write_run(run: ProbeRun, out: str | Path, *, alpha: float = 0.05) -> list[Path]:
    """Write a `ProbeRun`: JSON + CSVs, one effect map and volcano per probe, and the summary."""
    from attn_tools.viz.probes import plot_probe_map, plot_probe_summary, plot_volcano

    folder = Path(out)
    paths = [
        write_probe_results(
            folder, run.tables, entropy=run.entropy, mediation=run.mediation, alpha=alpha,
            settings=run.settings,
        )
    ]  # fmt: skip
    for name, table in run.tables.items():
        paths += [folder / f"{name}_map.png", folder / f"{name}_volcano.png"]
        plot_probe_map(table, alpha=alpha, save=paths[-2])
        plot_volcano(table, alpha=alpha, save=paths[-1])
    paths.append(folder / "probe_summary.png")
    plot_probe_summary(run.entropy, run.tables, alpha=alpha, title=run.model, save=paths[-1])
    return paths
