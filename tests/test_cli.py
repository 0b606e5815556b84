"""The `attn-tools` command line, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attn_tools.report import summarise


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attn_tools.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        timeout=600,
    )


def test_models_and_sentences_listings():
    r = _run("models")
    assert r.returncode == 0, r.stderr
    assert "minilm" in r.stdout and "smollm2" in r.stdout and "offline: yes" in r.stdout
    r = _run("sentences")
    assert r.returncode == 0 and "heldout" in r.stdout and "sentences)" in r.stdout


def test_extract_writes_a_summary(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("The dog barked.\nThe cat, startled, ran away.\n")
    r = _run(
        "extract", "--model", "minilm", "--sentences", str(src), "--out", str(tmp_path), "--quiet"
    )
    assert r.returncode == 0, r.stderr
    (summary,) = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == "all-MiniLM-L6-v2" and summary["sentences"] == 2
    assert (
        summary["tokens"] == 6 + 10
    )  # [CLS] ... [SEP] each and len(summary["entropy_bits_per_layer"]) == 6


def test_bad_input_is_one_clear_line(tmp_path):
    r = _run("extract", "--model", "minilm", "--sentences", "no-such-set", "--quiet")
    assert r.returncode == 2
    assert "error: no sentence set or file named 'no-such-set'" in r.stderr
    assert "Traceback" not in r.stderr
    r = _run("automate", "--heads", "5-3", "--out", str(tmp_path))
    assert r.returncode == 2 and "LAYER.HEAD" in r.stderr


def test_summarise_numbers(minilm_records):
    s = summarise(minilm_records[:3])
    assert s["sentences"] == 3 and s["layers"] == 6 and s["heads"] == 12
    assert s["tokens"] == sum(r.n_tokens for r in minilm_records[:3])
    assert all(0.0 <= x <= 1.0 for x in s["attention_to_first_token_per_layer"])
    assert all(0.0 < x < 6.0 for x in s["entropy_bits_per_layer"])
    with pytest.raises(ValueError):
        summarise([])


def test_automate_search_backend_writes_a_resumable_run(tmp_path):
    """The README's automate command, on one MiniLM head, with the offline program search."""
    run = tmp_path / "run"
    args = ("automate", "--model", "minilm", "--heads", "0.2", "--backend", "search")
    r = _run(*args, "--out", str(run), "--library", str(tmp_path / "lib"), "--quiet")
    assert r.returncode == 0, r.stderr
    import pandas as pd

    summary = (run / "summary.csv").read_text()
    (row,) = pd.read_csv(run / "summary.csv").itertuples()
    # MiniLM L0.H2 is a previous-token head: the search says so and matches the built-in
    assert (row.layer, row.head, row.status) == (0, 2, "validated")
    assert "previous token" in row.hypothesis and row.builtin_name == "previous_token"
    assert row.heldout_score <= row.builtin_score + 1e-9 < 0.05
    assert "previous token" in r.stdout and (run / "heads" / "L00_H02").is_dir()
    # a second run resumes: the finished head is not redone, the summary is unchanged
    again = _run(*args, "--out", str(run), "--no-library", "--quiet")
    assert again.returncode == 0, again.stderr
    assert (run / "summary.csv").read_text() == summary


def test_help_imports_no_heavy_library():
    """`attn-tools --help` parses without torch, transformers, spaCy, matplotlib or pandas."""
    code = (
        "import sys, attn_tools.cli as cli\n"
        "try:\n    cli.build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'spacy', 'matplotlib', 'pandas')"
        " if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "usage: attn-tools" in r.stdout and "figures" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_metric_choices_come_from_the_registry(capsys):
    import numpy as np

    from attn_tools.cli import build_parser
    from attn_tools.scoring import MetricSpec, register_metric, unregister_metric

    def rows(att, pat, options):
        return np.zeros(att.shape[:1] + pat.shape[:2])

    register_metric(MetricSpec("ranks_test", False, "ranking test", rows=rows, ranks_patterns=True))
    register_metric(MetricSpec("plain_test", True, "plain test", rows=rows))
    try:
        parser = build_parser()
        assert parser.parse_args(["score", "--metric", "plain_test"]).metric == "plain_test"
        assert parser.parse_args(["figures", "--metric", "ranks_test"]).metric == "ranks_test"
        with pytest.raises(SystemExit):  # figures needs a metric that ranks patterns
            parser.parse_args(["figures", "--metric", "plain_test"])
        assert "invalid choice: 'plain_test'" in capsys.readouterr().err
    finally:
        unregister_metric("ranks_test")
        unregister_metric("plain_test")


def test_showcase_head_skips_sinks_and_follows_the_metric_direction():
    import pandas as pd

    from attn_tools.report import showcase_head

    fit = pd.DataFrame(
        {
            "layer": [0, 1, 2, 3],
            "head": [0, 1, 2, 3],
            "label": ["first_token", "self", "previous_token", "none"],
            "best_score": [0.1, 0.3, 0.2, 0.05],
            "metric": "jsd",
        }
    )
    assert showcase_head(fit) == (2, 2)  # lowest distance that is neither a sink nor "none"
    assert showcase_head(fit.assign(metric="argmax_accuracy")) == (1, 1)  # highest accuracy


def test_automate_with_a_chat_backend_refuses_without_bubblewrap(tmp_path):
    """Where bubblewrap is missing, LLM-written programs are refused before any work, with the
    command that fixes it; nothing is sent to the server and no run folder is made."""
    import shutil

    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bubblewrap is not installed here: nothing to hide")
    # a PATH without bubblewrap's folder, the interpreter called by its absolute path
    bare = tmp_path / "bin"
    bare.mkdir()
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "attn_tools.cli", "automate", "--model", "minilm", "--heads",
         "0.2", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--out", str(out),
         "--no-library", "--quiet"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PATH": str(bare), "OPENAI_API_KEY": "sk-test-not-used"},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "apt-get install bubblewrap" in r.stderr and "--unsafe-no-os-sandbox" in r.stderr
    assert not out.exists()


def test_score_and_figures_with_sinks_removed(tmp_path):
    """`score` and `figures` end to end on a user's file, with --drop-keys and --shared-range:
    the written tables carry the setting, the grid's rule says it, and figures are written."""
    import pandas as pd

    src = tmp_path / "s.txt"
    src.write_text(
        "\n".join(
            [
                "The old clock in the hall struck nine, and nobody moved.",
                "A gull circled the harbour twice before it landed on the mast.",
                "She folded the letter, sealed it, and left it on the table.",
                "Rain drummed on the tin roof all through the long night.",
                "The children counted the boats, then counted them again.",
                "His bicycle leaned against the fence where he had left it.",
            ]
        )
        + "\n"
    )
    out = tmp_path / "out"
    r = _run("score", "--model", "minilm", "--sentences", str(src), "--drop-keys", "first",
             "--quiet", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(out / "scores_all-MiniLM-L6-v2_jsd_drop-first.csv")
    assert set(table["drop_keys"]) == {"first"} and len(table) == 72 * table["pattern"].nunique()
    assert "[positional]" in r.stdout and "previous_token" in r.stdout
    r = _run("figures", "--model", "minilm", "--sentences", str(src), "--drop-keys", "special",
             "--shared-range", "--quiet", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    folder = out / "all-MiniLM-L6-v2_drop-special"
    assert (folder / "best_fit_grid.png").stat().st_size > 10_000
    assert (folder / "scores-previous_token.png").exists()
    best = pd.read_csv(folder / "best_fit.csv")
    assert len(best) == 72 and best["label"].notna().all()


def test_quiet_silences_every_bar_and_the_default_bar_stays(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("The dog barked.\nThe cat, startled, ran away.\nRain fell on the old roof.\n")
    loud = _run("extract", "--model", "minilm", "--sentences", str(src), "--out", str(tmp_path))
    assert loud.returncode == 0, loud.stderr
    # the extraction bar ends at 3/3 and is left on screen (its last state is the final line)
    bar = [ln for ln in loud.stderr.replace("\r", "\n").splitlines() if "attention ·" in ln]
    assert bar and "3/3" in bar[-1] and "100%" in bar[-1]
    quiet = _run(
        "extract", "--model", "minilm", "--sentences", str(src), "--out", str(tmp_path), "--quiet"
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "it/s" not in quiet.stderr and "sent/s" not in quiet.stderr  # no loading bar either
    assert "Loading" not in quiet.stderr and "%|" not in quiet.stderr


def test_every_option_has_help_and_shows_its_default():
    from attn_tools.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = []
    for name, sp in sub.choices.items():
        for action in sp._actions:
            if action.option_strings and action.dest != "help" and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings)}")
    assert not missing, f"options without help text: {missing}"
    text = sub.choices["score"].format_help()
    assert "(default: 16)" in text and "(default: jsd)" in text and "(default: all)" in text
    assert "(default: False)" not in text  # flags say what they do, not a default


def test_extraction_progress_counts_sentences_as_their_forward_pass_ends(minilm):
    import io

    from attn_tools.extract import iter_extract

    texts = [f"Sentence number {w} is here." for w in ("one", "two", "three", "four", "five")]
    out = io.StringIO()
    stream = iter_extract(
        minilm,
        texts,
        batch_size=2,
        cache=False,
        progress={"file": out, "mininterval": 0, "miniters": 1, "leave": True},
    )
    first = next(stream)  # the whole window (8 ≥ 5 sentences) was computed before this
    assert first.text == texts[0]
    counts = [ln.split("|")[-1].split()[0] for ln in out.getvalue().split("\r") if "|" in ln]
    assert counts[-1] == "5/5", counts  # not 0/5: the bar moved with the work, not the yields
    assert "2/5" in counts and "4/5" in counts  # per batch of two
    assert [r.text for r in [first, *stream]] == texts


def test_figures_for_chosen_patterns_with_a_progress_bar(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text(  # six sentences: enough support (classify.supported) to name heads
        "The lamp flickered twice, then the whole street went dark.\n"
        "Her brother fixed the gate, painted it, and forgot the hinges.\n"
        "Snow covered the field before the farmer woke.\n"
        "Two trains left the station at noon, one going north.\n"
        "My aunt keeps her keys in a blue tin by the door.\n"
        "The choir sang softly while the candles burned low.\n"
    )
    out = tmp_path / "out"
    r = _run("figures", "--model", "minilm", "--sentences", str(src), "--out", str(out),
             "--patterns", "previous_token,first_token")  # fmt: skip
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (out / "all-MiniLM-L6-v2").glob("*.png"))
    assert names == sorted(
        ["best_fit_grid.png"]
        + [f"{kind}-{p}.png" for kind in ("scores", "top_heads", "example")
           for p in ("previous_token", "first_token")]
    )  # fmt: skip
    bar = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if "figures ·" in ln]
    assert bar and "2/2" in bar[-1]  # one step per pattern, left on screen
    bad = _run("figures", "--model", "minilm", "--sentences", str(src), "--out", str(out),
               "--patterns", "previous_tokn", "--quiet")  # fmt: skip
    assert bad.returncode == 2 and "previous_tokn" in bad.stderr and "Fix:" in bad.stderr
    assert "Traceback" not in bad.stderr
