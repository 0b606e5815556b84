"""`attn-tools ablate` and `attn-tools lens`, run as real processes on a tiny saved model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_adapters import save_tiny

from attn_tools import load_model
from attn_tools.interventions import ablate_heads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, smollm2) -> Path:
    return save_tiny("llama", tmp_path_factory.mktemp("cli_llama"), smollm2.tokenizer, seed=4)


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "attn_tools.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def test_ablate_writes_the_table_and_figure(folder, tmp_path):
    texts = ["The small dog ran home.", "Prices rose again in March."]
    (tmp_path / "s.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "out"
    done = _run(
        "ablate", "--model", str(folder), "--sentences", str(tmp_path / "s.txt"),
        "--method", "mean", "--top", "3", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    csv = next(out.glob("ablation_*_mean.csv"))
    assert next(out.glob("ablation_*_mean.png")).stat().st_size > 1000
    table = pd.read_csv(csv)
    want = ablate_heads(load_model(folder), texts, "all", method="mean")
    assert len(table) == 2 * 4
    assert table.delta_loss.to_numpy() == pytest.approx(want.delta_loss.to_numpy(), abs=1e-6)
    assert "wrote" in done.stdout and str(csv) in done.stdout


def test_lens_writes_the_table_and_refuses_encoders(folder, tmp_path, capsys, monkeypatch):
    done = _run(
        "lens", "--model", str(folder), "--text", "The cat sat.", "--out", "o", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(next((tmp_path / "o").glob("lens_*.csv")))
    assert sorted(table.layer.unique()) == [0, 1, 2]
    assert (tmp_path / "o").glob("lens_*.png")
    # the refusal in-process (same parser and command; a second process would only reload)
    from attn_tools.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["lens", "--model", "minilm", "--text", "The cat sat.", "--out", "o2"]) == 2
    err = capsys.readouterr().err
    assert "attn-tools lens: error" in err and "Fix" in err
    assert not (tmp_path / "o2").exists()  # nothing half-written
