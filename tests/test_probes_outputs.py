"""Probe outputs: figures, analysis_results.json and the `attn-tools probe` command (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from attn_tools.probes.results import head_entropy, top_heads, write_probe_results
from attn_tools.probes.stats import heads_table
from attn_tools.viz import plot_probe_map, plot_probe_summary, plot_volcano


@pytest.fixture(scope="module")
def planted_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = np.repeat([0.0, 1.0], 60)
    x = rng.normal(size=(120, 12))
    x[:, 5] += 1.2 * y  # layer 1, head 1 of a 3 × 4 model
    x[:, 10] -= 1.0 * y  # layer 2, head 2
    return heads_table(
        x, labels=y, model="toy", n_layers=3, n_heads=4, probe="sentiment", statistic="r",
        n_permutations=300, n_bootstrap=100,
    )  # fmt: skip


def test_effect_map_outlines_exactly_the_significant_heads(planted_table):
    fig = plot_probe_map(planted_table)
    ax = fig.axes[0]
    boxes = sorted(
        (int(round(p.get_y() + 0.5)), int(round(p.get_x() + 0.5)))
        for p in ax.patches
        if isinstance(p, Rectangle)
    )
    sig = planted_table[planted_table.q_value < 0.05]
    assert boxes == sorted(zip(sig.layer, sig["head"]))
    assert (1, 1) in boxes and (2, 2) in boxes
    image = ax.images[0].get_array()
    assert image.shape == (3, 4)
    assert image[1, 1] == pytest.approx(planted_table.effect.iloc[5])
    assert image[1, 1] > 0 > image[2, 2]


def test_volcano_and_summary_draw_the_right_points(planted_table, tmp_path):
    fig = plot_volcano(planted_table, save=tmp_path / "v.png")
    points = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert points == 12 and (tmp_path / "v.png").stat().st_size > 1000
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert {"L1H1", "L2H2"} <= labels
    entropy = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "entropy_bits": 1.0})
    fig = plot_probe_summary(entropy, {"sentiment": planted_table})
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"bias: skipped", "instruction: skipped"} <= texts
    with pytest.raises(ValueError, match="probe table with columns"):
        plot_probe_map(pd.DataFrame({"x": [1]}))


def test_results_json_holds_top_heads_and_metadata(planted_table, tmp_path, minilm_records):
    entropy = head_entropy(minilm_records[:3])
    assert entropy.entropy_bits.between(0, np.log2(60)).all() and len(entropy) == 72
    path = write_probe_results(tmp_path, {"sentiment": planted_table}, entropy=entropy,
                               settings={"seed": 0})  # fmt: skip
    doc = json.loads(path.read_text())
    probe = doc["probes"]["sentiment"]
    assert doc["model"] == "toy" and doc["packages"]["numpy"] == np.__version__
    assert probe["n"] == 120 and probe["n_permutations"] == 300
    assert probe["n_significant"] == int((planted_table.q_value < 0.05).sum())
    expect = top_heads(planted_table)
    assert [(h["layer"], h["head"]) for h in probe["top_heads"]] == list(
        zip(expect.layer, expect["head"])
    )
    assert np.array(doc["entropy_bits"]).shape == (6, 12)
    assert pd.read_csv(tmp_path / "probe_sentiment.csv").shape == planted_table.shape


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attn_tools.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        timeout=900,
    )


def test_probe_command_writes_tables_figures_and_json(tmp_path):
    out = tmp_path / "probes"
    r = _cli("probe", "--model", "minilm", "--quick", "--skip", "bias", "--skip",
             "instruction", "--permutations", "100", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "sentiment:" in r.stdout and "bias:" not in r.stdout
    doc = json.loads((out / "analysis_results.json").read_text())
    assert set(doc["probes"]) == {"sentiment"} and doc["mediation"] is None
    assert doc["settings"]["n_permutations"] == 100 and doc["settings"]["quick"] is True
    for name in ("probe_summary.png", "sentiment_map.png", "sentiment_volcano.png"):
        assert (out / name).stat().st_size > 1000
    table = pd.read_csv(out / "probe_sentiment.csv")
    assert len(table) == 72 and table.n.iloc[0] == 80


def test_probe_command_rejects_an_unknown_step(tmp_path):
    r = _cli("probe", "--skip", "neuronz", "--out", str(tmp_path))
    assert r.returncode == 2 and "invalid choice: 'neuronz'" in r.stderr
