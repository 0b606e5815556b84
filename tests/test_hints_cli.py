"""`attn-tools hints` and the hint figures, on a tiny random GPT-2 (plain prompt format)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from attn_tools.cli import main


@pytest.fixture(scope="module")
def tiny_folder(smollm2, tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny_gpt2_cli")
    torch.manual_seed(1)
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(smollm2.tokenizer), n_positions=1024, n_embd=32, n_layer=2,
                   n_head=4)
    ).save_pretrained(folder)  # fmt: skip
    tok = copy.deepcopy(smollm2.tokenizer)
    tok.chat_template = None
    tok.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def test_cli_hints_writes_tables_and_figures(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["hints", "--model", str(tiny_folder), "--items", "builtin", "--limit", "12",
         "--hint", "few-shot", "--target", "random", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "12 items" in printed and "flip-to-hint" in printed
    summary = pd.read_csv(out / "summary.csv")
    items = pd.read_csv(out / "items.csv")
    heads = pd.read_csv(out / "head_attention.csv")
    assert summary.loc[0, "n_items"] == 12 and summary.loc[0, "hint"] == "few-shot"
    assert summary.loc[0, "items_source"] == "builtin"
    assert len(items) == 12 and len(heads) == 2 * 4
    eligible = items[items["eligible"]]
    assert summary.loc[0, "flip_to_hint_rate"] == pytest.approx(eligible["flipped_to_hint"].mean())
    for name in ("flip_matrix", "flip_rates", "head_hint_mass", "head_column_shift"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"wrote {png}" in printed
    assert not list(out.glob("*.tmp"))


def test_cli_hints_bad_input_is_one_clear_line(tiny_folder, tmp_path, capsys):
    code = main(["hints", "--model", str(tiny_folder), "--items", "mmlu:astrology",
                 "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "error: MMLU has no topic 'astrology'" in err and "Fix:" in err
    code = main(["hints", "--model", str(tiny_folder), "--items", str(tmp_path / "no.jsonl"),
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 2 and "is not 'builtin'" in capsys.readouterr().err


def test_hint_figures(tiny_folder):
    from attn_tools import load_model
    from attn_tools.hints import evaluate_hints, item_attention, load_items
    from attn_tools.viz.hints import (
        plot_flip_matrix,
        plot_flip_rates,
        plot_hint_attention_map,
        plot_hint_item_attention,
    )

    bundle = load_model(str(tiny_folder))
    res = evaluate_hints(bundle, load_items("builtin")[:6], hint="metadata", n_permutations=19)
    fig = plot_flip_matrix(res.items)
    counts = fig.axes[0].images[0].get_array()
    assert counts.sum() == 6  # every item lands in one cell
    assert counts.shape[0] >= int(res.items[["answer_without", "answer_with"]].max().max()) + 1
    fig = plot_hint_attention_map(res.head_attention)
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (2, 4)  # layers × heads, layer 0 at the bottom (origin="lower")
    assert fig.axes[0].images[0].origin == "lower"
    both = pd.concat([res.summary, res.summary.assign(hint="again")])
    fig = plot_flip_rates(both)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights[:2] == pytest.approx(list(both["flip_to_hint_rate"]))
    tokens, att, idx = item_attention(bundle, res, 0, 1, 2)
    fig = plot_hint_item_attention(tokens, att, idx, title="item 0")
    assert np.allclose(fig.axes[0].images[0].get_array(), att)
    with pytest.raises(ValueError, match="Fix:"):
        plot_hint_item_attention(tokens[:-1], att, idx)
    with pytest.raises(ValueError, match="score='hint_mass'"):
        plot_hint_attention_map(res.head_attention, score="entropy")
