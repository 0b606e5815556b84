"""Figures from computed results: one head, a head against a pattern, a layer, score maps, top
heads, held-out consistency, linear fits and the best-fit grid.

Every ``plot_*`` function takes results that were computed elsewhere (records, `report.compare_head`,
`scoring.score_heads`, `classify.*` tables), never scores or classifies itself, returns a matplotlib
`Figure` that a notebook shows as a PNG (`NotebookFigure`) and takes ``save=`` (a path; see
`save_figure`) to write it as PNG, SVG or PDF. Attention matrices put queries on the y axis (row
``q`` attends *from* token ``q``) and keys on the x axis; layer × head grids put layer 0 at the
bottom. Each pattern has one colour everywhere (`pattern_color`). One colour direction everywhere:
darker = stronger attention = better fit (score maps flip their colormap for lower-is-better
metrics, `score_cmap`). Rows a pattern leaves empty (its self fallback) are grey and hatched
(`draw_fallback_rows`); titles that hold a model name wrap to the figure (`fit_text`).

Modules: `canvas` (figures, saving, token ticks, metric labels), `matrices`, `tables`, `grid`,
`colors`, `charlm` (character models, language comparison, Hebrew right to left), `syntax` (Clark-style syntax table and head map), `stats` (head types, layer
progression, generation traces), `causal` (ablation, attribution, explains_head, logit
lens). Writing a whole set of figures and tables is `attn_tools.report.write_figures`.

Example:
    >>> recs = extract(load_model("minilm"), load_sentences("story")[:12])
    >>> fit = classify.best_fit(score_heads(recs))
    >>> viz.plot_best_fit_grid(fit, save="outputs/minilm_best_fit.png")
"""

from __future__ import annotations

from attn_tools.viz.canvas import (
    ATTENTION_CMAP,
    FALLBACK_LABEL,
    FORMATS,
    FigureFormat,
    NotebookFigure,
    Scale,
    clean_label,
    colorbar_label,
    draw_fallback_rows,
    draw_matrix,
    fallback_legend_handle,
    figure_png,
    fit_text,
    matrix_side_inches,
    metric_axis_label,
    metric_display,
    metric_limits,
    new_figure,
    resolve_scale,
    save_figure,
    set_token_ticks,
    thin_ticks,
)
from attn_tools.viz.causal import (
    plot_ablation_matrix,
    plot_attribution,
    plot_explains,
    plot_logit_lens,
)
from attn_tools.viz.charlm import (
    bidi_text,
    display_text,
    missing_glyphs,
    plot_char_head,
    plot_language_comparison,
)
from attn_tools.viz.colors import NONE_COLOR, NONE_LABEL, pattern_color, pattern_table
from attn_tools.viz.grid import MAX_TIED_COLORS, best_fit_title, head_labels, plot_best_fit_grid
from attn_tools.viz.matrices import (
    plot_alignment,
    plot_head,
    plot_head_vs_pattern,
    plot_layer,
    plot_patterns,
)
from attn_tools.viz.probes import plot_probe_map, plot_probe_summary, plot_volcano
from attn_tools.viz.stats import (
    head_type_color,
    plot_first_token_share,
    plot_generation_attention,
    plot_head_type_grid,
    plot_layer_progression,
    plot_norm_growth,
)
from attn_tools.viz.syntax import plot_head_embedding, plot_syntax_table
from attn_tools.viz.tables import (
    draw_bars,
    draw_diagonal_scatter,
    grid_shape,
    head_grid,
    plot_consistency,
    plot_linear_fit,
    plot_pattern_scores,
    plot_top_heads,
    score_cmap,
    select_table,
)

__all__ = [
    "bidi_text",
    "display_text",
    "missing_glyphs",
    "plot_char_head",
    "plot_language_comparison",
    "plot_ablation_matrix",
    "plot_attribution",
    "plot_explains",
    "plot_logit_lens",
    "ATTENTION_CMAP",
    "FALLBACK_LABEL",
    "FORMATS",
    "MAX_TIED_COLORS",
    "NONE_COLOR",
    "NONE_LABEL",
    "FigureFormat",
    "NotebookFigure",
    "Scale",
    "best_fit_title",
    "clean_label",
    "colorbar_label",
    "draw_bars",
    "draw_diagonal_scatter",
    "draw_fallback_rows",
    "draw_matrix",
    "fallback_legend_handle",
    "figure_png",
    "fit_text",
    "grid_shape",
    "head_grid",
    "head_type_color",
    "head_labels",
    "matrix_side_inches",
    "metric_axis_label",
    "metric_display",
    "metric_limits",
    "new_figure",
    "pattern_color",
    "pattern_table",
    "plot_alignment",
    "plot_best_fit_grid",
    "plot_consistency",
    "plot_first_token_share",
    "plot_generation_attention",
    "plot_head",
    "plot_head_embedding",
    "plot_head_type_grid",
    "plot_head_vs_pattern",
    "plot_layer",
    "plot_layer_progression",
    "plot_linear_fit",
    "plot_norm_growth",
    "plot_pattern_scores",
    "plot_patterns",
    "plot_syntax_table",
    "plot_probe_map",
    "plot_probe_summary",
    "plot_top_heads",
    "plot_volcano",
    "resolve_scale",
    "save_figure",
    "score_cmap",
    "select_table",
    "set_token_ticks",
    "thin_ticks",
]
