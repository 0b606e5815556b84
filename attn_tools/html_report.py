"""One self-contained ``report.html``: figures inlined, tables as HTML, no external request.

`HtmlReport` is a small document builder (sections with anchors, paragraphs, figures, tables, a
table of contents); `model_sections` fills it with what the analysis knows about one model (the
summary, the best-fit grid with and without the first-token sink, label counts, the top heads of
every pattern *with* "no head fits" where none does, held-out consistency, head types, the Clark
et al. syntax table, and any extra tables or figures a caller passes). Figures are embedded as base64 PNG (or inline SVG),
so the file can be mailed, opened from disk or served anywhere, and shows the same offline.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

__all__ = ["HtmlReport", "model_report", "model_sections", "write_report"]

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 0 20px 60px; color: #1b1b1b; background: #fff; }
h1 { font-size: 26px; margin: 28px 0 6px; } h2 { font-size: 21px; margin-top: 40px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 17px; }
nav ul { columns: 2; padding-left: 18px; } figure { margin: 14px 0; }
figure img, figure svg { max-width: 100%; height: auto; } figcaption { color: #555; font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
.note { color: #555; font-size: 13px; } .nofit { color: #a33; font-weight: 600; }
@media (prefers-color-scheme: dark) {
  body { background: #161616; color: #e6e6e6; } th { background: #262626; }
  th, td { border-color: #3a3a3a; } .note, figcaption { color: #aaa; } a { color: #8ab4f8; }
  figure img { background: #fff; }
}
"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


@dataclass
class HtmlReport:
    """A document built section by section and written as one file with nothing external.

    Example:
        >>> rep = HtmlReport("attn_tools report")
        >>> rep.section("MiniLM"); rep.paragraph("72 heads.")
        >>> rep.figure(fig, "best-fit grid"); rep.table(df, "top heads")
        >>> rep.write("outputs/report.html")
    """

    title: str
    subtitle: str = ""
    _parts: list[str] = field(default_factory=list)
    _toc: list[tuple[int, str, str]] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)

    def _anchor(self, text: str) -> str:
        base = _slug(text)
        anchor, k = base, 2
        while anchor in self._ids:
            anchor, k = f"{base}-{k}", k + 1
        self._ids.add(anchor)
        return anchor

    def section(self, heading: str, *, level: Literal[2, 3] = 2) -> str:
        """Start a section (``level`` 2) or subsection (3); returns its anchor for links."""
        anchor = self._anchor(heading)
        self._toc.append((level, heading, anchor))
        self._parts.append(f'<h{level} id="{anchor}">{html.escape(heading)}</h{level}>')
        return anchor

    def paragraph(self, text: str, *, note: bool = False) -> None:
        """A paragraph of plain text (escaped); ``note`` sets it in the small grey style."""
        cls = ' class="note"' if note else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def link(self, text: str, anchor: str) -> None:
        """A paragraph that links to another section of this report."""
        self._parts.append(f'<p><a href="#{html.escape(anchor)}">{html.escape(text)}</a></p>')

    def figure(
        self, fig: Any, caption: str = "", *, fmt: Literal["png", "svg"] = "png", dpi: int = 110
    ) -> None:
        """Embed a matplotlib Figure (closed afterwards) as a base64 PNG or inline SVG."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        alt = html.escape(caption or "figure")
        if fmt == "svg":
            svg = buf.getvalue().decode("utf-8")
            body = svg[svg.index("<svg") :]  # drop the XML prolog and DOCTYPE
        else:
            data = base64.b64encode(buf.getvalue()).decode("ascii")
            body = f'<img alt="{alt}" src="data:image/png;base64,{data}">'
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(f"<figure>{body}{cap}</figure>")

    def image(self, path: str | Path, caption: str = "") -> None:
        """Embed a PNG file already written (read and inlined, never linked)."""
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        alt = html.escape(caption or Path(path).name)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(
            f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">{cap}</figure>'
        )

    def table(
        self,
        df: pd.DataFrame,
        caption: str = "",
        *,
        floatfmt: str = "{:.3f}",
        max_rows: int = 200,
        classes: Mapping[str, str] | None = None,
    ) -> None:
        """An HTML table (values escaped; text columns left-aligned; at most ``max_rows`` rows).

        ``classes`` maps a cell's text to a CSS class, e.g. ``{"no head fits": "nofit"}``.
        """
        classes = dict(classes or {})
        shown = df.head(max_rows)
        cols = list(shown.columns)
        text_cols = {c for c in cols if not pd.api.types.is_numeric_dtype(shown[c])}
        head = "".join(
            f'<th class="text">{html.escape(str(c))}</th>'
            if c in text_cols
            else f"<th>{html.escape(str(c))}</th>"
            for c in cols
        )
        rows = []
        for values in shown.itertuples(index=False):
            cells = []
            for c, v in zip(cols, values):
                if isinstance(v, float):
                    txt = "" if pd.isna(v) else floatfmt.format(v)
                else:
                    txt = "" if v is None else str(v)
                cls = ["text"] if c in text_cols else []
                if txt in classes:
                    cls.append(classes[txt])
                attr = f' class="{" ".join(cls)}"' if cls else ""
                cells.append(f"<td{attr}>{html.escape(txt)}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        more = (
            f'<p class="note">{len(df) - max_rows} more rows not shown.</p>'
            if len(df) > max_rows
            else ""
        )
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self._parts.append(
            f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + more
        )

    def render(self) -> str:
        """The whole document as one string."""
        toc = "".join(
            f'<li style="margin-left:{(lvl - 2) * 16}px"><a href="#{a}">{html.escape(t)}</a></li>'
            for lvl, t, a in self._toc
        )
        sub = f'<p class="note">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{sub}<nav><ul>{toc}</ul></nav>"
            + "\n".join(self._parts)
            + "</body></html>\n"
        )

    def extend(self, other: HtmlReport) -> None:
        """Append another report's sections (e.g. one model's, built in another process)."""
        clash = self._ids & other._ids
        if clash:
            raise ValueError(
                f"sections {sorted(clash)[:3]} are in both reports; their links would collide. "
                "Fix: give each model its own name."
            )
        self._parts.extend(other._parts)
        self._toc.extend(other._toc)
        self._ids |= other._ids

    def write(self, path: str | Path) -> Path:
        """Write the document (atomically: a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        tmp.replace(path)
        return path


def _label_counts(fit: pd.DataFrame) -> pd.DataFrame:
    labels = fit["label"].fillna("none").astype(str)
    counts = labels.value_counts().rename_axis("label").reset_index(name="heads")
    counts["heads_list"] = [
        ", ".join(
            f"L{int(r.layer)}.H{int(r.head)}"
            for r in fit[labels == lab].sort_values(["layer", "head"]).itertuples()
        )
        if lab != "none" and n <= 12
        else ""
        for lab, n in zip(counts["label"], counts["heads"])
    ]
    return counts


def _top_heads_table(ranked: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per pattern: its top ``k`` fitting heads, or "no head fits" / "no support"."""
    from attn_tools import classify

    rows = []
    for name, top in classify.top_heads_many(ranked, k=k).items():
        if top.empty:  # too few rows of its own on these sentences: no head can be named
            rows.append({"pattern": name, "verdict": "no support", "heads": ""})
            continue
        fits = top["fits"].astype(bool) if "fits" in top.columns else pd.Series(True, top.index)
        shown = top[fits] if fits.any() else top.head(1)
        heads = ", ".join(
            f"L{int(r.layer)}.H{int(r.head)} ({r.mean:.3f} vs {r.baseline_score:.3f})"
            for r in shown.itertuples()
        )
        verdict = "fits" if fits.any() else "no head fits"
        rows.append({"pattern": name, "verdict": verdict, "heads": heads})
    return pd.DataFrame(rows, columns=["pattern", "verdict", "heads"])


def model_sections(
    report: HtmlReport,
    records: Sequence[Any],
    *,
    summary: Mapping[str, Any],
    fit: pd.DataFrame,
    ranked: pd.DataFrame,
    fit_no_sink: pd.DataFrame | None = None,
    consistency: pd.DataFrame | None = None,
    head_types: pd.DataFrame | None = None,
    syntax: pd.DataFrame | None = None,
    extra: Sequence[tuple[str, pd.DataFrame | Any, str]] = (),
    top_k: int = 3,
    grid_image: str | Path | None = None,
    grid_no_sink_image: str | Path | None = None,
) -> str:
    """Add one model's sections to ``report``; returns the model section's anchor.

    Args:
        records: the model's `SentenceAttention` records (only its name is read here).
        summary: `report.summarise` of the records.
        fit: `classify.label_heads` (the calibrated labels) for the grid and the label counts.
        ranked: the own-rows score table (`report.score_tables`' second table) for top heads.
        fit_no_sink: the same labels with the first-token sink removed (``drop_keys="first"``).
        consistency: a `consistency.consistency` table (its `agreement_summary` is shown).
        head_types: a `stats.head_stats` table (the head-type grid and the count per type).
        syntax: a `syntax.syntax_table` (the Clark et al. 2019 table and its bar chart).
        extra: more subsections as ``(heading, DataFrame or Figure, caption)``.
        grid_image, grid_no_sink_image: PNG files of the two grids already drawn from ``fit``
            and ``fit_no_sink`` (`report.write_figures`, `report.write_sink_free_grid`), inlined
            instead of drawn again.
    """
    from attn_tools import viz
    from attn_tools.consistency import agreement_summary

    model = str(summary["model"])
    anchor = report.section(model)
    report.paragraph(
        f"{summary['kind']} model, {summary['layers']} layers × {summary['heads']} heads; "
        f"{summary['sentences']} sentences, {summary['tokens']} tokens "
        f"({summary['tokens_per_sentence']} per sentence)."
    )
    per_layer = pd.DataFrame(
        [summary["entropy_bits_per_layer"], summary["attention_to_first_token_per_layer"]],
        columns=[f"L{i}" for i in range(int(summary["layers"]))],
    )
    per_layer.insert(0, "per layer", ["entropy (bits)", "attention to first token"])
    report.table(per_layer, "mean over heads, rows and sentences", floatfmt="{:.2f}")

    grid = report.section(f"{model}: best-fit grid", level=3)
    caption = f"{model}: calibrated labels per head"
    if grid_image is not None:
        report.image(grid_image, caption)
    else:
        report.figure(viz.plot_best_fit_grid(fit, model=model), caption)
    report.table(_label_counts(fit), "heads per label (none = no pattern passes the rule)")
    if fit_no_sink is not None:
        report.section(f"{model}: besides the first-token sink", level=3)
        caption = f"{model}: labels with the first token's column removed"
        if grid_no_sink_image is not None:
            report.image(grid_no_sink_image, caption)
        else:
            report.figure(viz.plot_best_fit_grid(fit_no_sink, model=model), caption)
        report.table(_label_counts(fit_no_sink), "heads per label, sink removed")
    report.section(f"{model}: top heads per pattern", level=3)
    metric = str(ranked["metric"].iloc[0]) if "metric" in ranked.columns else "score"
    report.paragraph(
        f"Each pattern's best heads (at most {top_k}) among those that beat their own uniform "
        f"score by the margin (classify.top_heads), as 'head (score vs its uniform score)' in "
        f"{metric}; 'no head fits' where none does (the closest head is shown), 'no support' "
        "where the pattern predicts too few rows of its own on these sentences.",
        note=True,
    )
    report.table(
        _top_heads_table(ranked, top_k),
        "top heads per pattern",
        classes={"no head fits": "nofit", "no support": "nofit"},
        max_rows=1000,
    )
    report.link("back to the grid", grid)
    if consistency is not None:
        report.section(f"{model}: does it hold on other sentences?", level=3)
        report.table(agreement_summary(consistency), "label agreement between the two halves")
    if head_types is not None:
        report.section(f"{model}: head types", level=3)
        report.figure(
            viz.plot_head_type_grid(head_types, model=model),
            f"{model}: each head's type from its attention statistics (stats.head_stats)",
        )
        counts = head_types["head_type"].value_counts().rename_axis("head type")
        report.table(counts.reset_index(name="heads"), "heads per type")
    if syntax is not None and not len(syntax):
        report.section(f"{model}: syntax heads (Clark et al. 2019)", level=3)
        report.paragraph(
            "No dependency relation has enough arcs in these sentences for the syntax table "
            "(syntax_table's min_arcs); analyse more sentences to see it."
        )
    elif syntax is not None:
        report.section(f"{model}: syntax heads (Clark et al. 2019)", level=3)
        report.paragraph(
            "Per dependency relation (spaCy's labels, not the paper's; not comparable 1:1): the "
            "best head read as a parser against the best fixed offset, with 95 % bootstrap "
            "intervals over sentences (attn_tools.syntax.syntax_table).",
            note=True,
        )
        report.figure(viz.plot_syntax_table(syntax), f"{model}: best head vs best offset")
        cols = ["relation", "n_arcs", "layer", "head", "direction", "accuracy", "offset",
                "baseline", "gain", "gain_low", "gain_high"]  # fmt: skip
        report.table(syntax[[c for c in cols if c in syntax.columns]], "syntax table")
    for heading, content, caption in extra:
        report.section(f"{model}: {heading}", level=3)
        if isinstance(content, pd.DataFrame):
            report.table(content, caption)
        else:
            report.figure(content, caption)
    return anchor


def model_report(
    records: Sequence[Any],
    *,
    known: Mapping[str, Any] | None = None,
    with_consistency: bool = True,
    with_head_types: bool = True,
    with_syntax: bool = True,
    extra: Sequence[tuple[str, Any, str]] = (),
) -> HtmlReport:
    """One model's sections as an `HtmlReport` fragment (`write_report` joins them with
    `HtmlReport.extend`); computes whatever ``known`` lacks, as `write_report` documents."""
    from attn_tools import report as rpt
    from attn_tools.classify import label_heads
    from attn_tools.consistency import consistency as run_consistency

    have = dict(known or {})
    ctx = have.get("contexts")
    if ctx is None and not {"ranked", "fit", "fit_no_sink", "consistency"} <= set(have):
        from attn_tools.patterns.base import build_contexts

        ctx = build_contexts(records)  # shared by the passes below, predictions memoised
    if "summary" not in have:
        have["summary"] = rpt.summarise(records)
    if "ranked" not in have:
        have["ranked"] = rpt.score_tables(records, contexts=ctx)[1]
    if "fit" not in have:
        have["fit"] = label_heads(records, contexts=ctx)
    if "fit_no_sink" not in have:
        have["fit_no_sink"] = label_heads(records, drop_keys="first", contexts=ctx)
    if with_consistency and "consistency" not in have:
        have["consistency"] = run_consistency(records, contexts=ctx)
    if with_head_types and "head_types" not in have:
        from attn_tools.stats import head_stats

        have["head_types"] = head_stats(records)
    if with_syntax and "syntax" not in have:
        from attn_tools.syntax import syntax_table

        have["syntax"] = syntax_table(records)
    frag = HtmlReport("")
    model_sections(
        frag,
        records,
        summary=have["summary"],
        fit=have["fit"],
        ranked=have["ranked"],
        fit_no_sink=have["fit_no_sink"],
        consistency=have.get("consistency") if with_consistency else None,
        head_types=have.get("head_types") if with_head_types else None,
        syntax=have.get("syntax") if with_syntax else None,
        extra=extra,
        grid_image=have.get("grid_image"),
        grid_no_sink_image=have.get("grid_no_sink_image"),
    )
    return frag


def write_report(
    records_by_model: Sequence[Sequence[Any]],
    path: str | Path,
    *,
    title: str = "Which attention heads do what?",
    subtitle: str = "",
    known: Mapping[str, Mapping[str, Any]] | None = None,
    with_consistency: bool = True,
    with_head_types: bool = True,
    with_syntax: bool = True,
    extra: Mapping[str, Sequence[tuple[str, Any, str]]] | None = None,
    progress: bool = False,
) -> Path:
    """Analyse each model's records and write one self-contained ``report.html``.

    Args:
        records_by_model: one list of `SentenceAttention` records per model.
        path: the file to write (its folder is created).
        known: per model name, results already computed (keys ``summary``, ``fit``, ``ranked``,
            ``fit_no_sink``, ``consistency``, ``head_types``, ``syntax``, ``contexts``: the
            records' `PatternContext` list, ``grid_image``/``grid_no_sink_image``: PNG files of
            the two grids) so a caller that has them pays nothing twice.
        with_consistency: add the held-out agreement (two random halves) per model.
        with_head_types: add the head types (`stats.head_stats`) per model.
        with_syntax: add the Clark et al. syntax table per model (needs spaCy's parses, which
            are cached like attention).
        extra: per model name, more subsections ``(heading, DataFrame or Figure, caption)``.
        progress: a tqdm bar over the models.
    """
    known = known or {}
    extra = extra or {}
    doc = HtmlReport(title, subtitle=subtitle)
    groups = [list(r) for r in records_by_model]
    if not groups or any(not g for g in groups):
        raise ValueError("write_report needs at least one record per model. Fix: extract first")
    steps = groups
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(groups, desc="report", unit="model", leave=True)
    for records in steps:
        name = records[0].model
        doc.extend(
            model_report(
                records, known=known.get(name, {}), with_consistency=with_consistency,
                with_head_types=with_head_types, with_syntax=with_syntax,
                extra=extra.get(name, ()),
            )
        )  # fmt: skip
    return doc.write(path)
