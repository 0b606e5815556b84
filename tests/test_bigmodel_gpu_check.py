"""benchmarks/gpu_check.py runs end to end; on a CPU-only machine as a CPU self-comparison."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm) -> Path:
    import transformers as tf

    torch.manual_seed(11)
    config = tf.BertConfig(
        vocab_size=len(minilm.tokenizer), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny_bert")
    tf.BertModel(config).save_pretrained(folder)
    minilm.tokenizer.save_pretrained(folder)
    return folder


def test_gpu_check_runs_and_reports_every_step(tiny_bert, tmp_path):
    out = tmp_path / "gpu_check.json"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", str(tiny_bert), "--sentences", "heldout",
         "--n", "5", "--ablate-n", "2", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    if not torch.cuda.is_available():
        assert "no CUDA device is present" in r.stdout
        assert "compared: cpu" in r.stdout
    (row,) = json.loads(out.read_text())
    assert set(row["max_abs_diff"]) == {"load", "extract", "score", "ablate"}
    assert all(0.0 <= v <= 1e-4 for v in row["max_abs_diff"].values()) and row["passed"]
    assert row["sentences"] == 5 and (row["layers"], row["heads"]) == (2, 4)
    assert row["cpu_sentences_per_s"] > 0 and row["device_sentences_per_s"] > 0
    assert "PASS" in r.stdout and "sent/s" in r.stdout


def test_gpu_check_fails_a_step_over_the_tolerance(tiny_bert, capsys):
    """A tolerance no difference can meet: every step fails and the exit status says so."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = module.main(
        ["--models", str(tiny_bert), "--device", "cpu", "--device-map", "auto",
         "--sentences", "heldout", "--n", "3", "--ablate-n", "1", "--repeats", "1",
         "--tol", "-1"]
    )  # fmt: skip
    assert status == 1
    assert "FAIL" in capsys.readouterr().out
