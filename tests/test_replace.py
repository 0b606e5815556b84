"""Attention replacement and explains_head, checked against independent computations."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_adapters import FAMILIES, save_tiny

from attn_tools import extract, load_model
from attn_tools.interventions import (
    EXPLAINS_COLUMNS,
    REPLACE_COLUMNS,
    ablate_heads,
    explains_head,
    replace_attention,
)
from attn_tools.patterns import PatternError, build_context, predict

SENTENCES = [
    "The small dog ran home before the rain started.",
    "She wrote the letter, sealed it and walked to the post office.",
    "Prices rose again in March.",
]
# sentences the parity numbers were not tuned on
UNSEEN = [
    "A violinist tuned her strings while the audience whispered.",
    "Nobody expected the ferry to leave forty minutes early.",
]


def _double(bundle):
    """The same model in float64: float32 rounding alone moves the loss by ~1e-6 (see below)."""
    return dataclasses.replace(bundle, model=copy.deepcopy(bundle.model).double())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, request):
    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            tok_from = next(t for f, t, *_ in FAMILIES if f == family)
            tokenizer = request.getfixturevalue(tok_from).tokenizer
            folder = save_tiny(family, tmp_path_factory.mktemp(family), tokenizer, seed=7)
            cache[family] = load_model(folder, device="cpu")
        return cache[family]

    return get


def _own(layer: int, head: int):
    return lambda record: record.attention[layer, head]


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("family", [f for f, *_ in FAMILIES])
def test_own_attention_is_a_no_op_on_every_family(tiny, family):
    bundle = _double(tiny(family))
    heads = {(0, 1): _own(0, 1), (1, 3): _own(1, 3)}  # two heads of two layers at once
    table = replace_attention(bundle, UNSEEN, heads, cache=False)
    assert tuple(table.columns) == REPLACE_COLUMNS
    assert abs(table.delta_loss.iloc[0]) <= 1e-6
    # ...while a different pattern on the same heads does change the output
    other = replace_attention(bundle, UNSEEN, {(0, 1): "first_token", (1, 3): "first_token"})
    assert abs(other.delta_loss.iloc[0]) > max(1e-5, 1000 * abs(table.delta_loss.iloc[0]))


@pytest.mark.parametrize("name", ["smollm2", "minilm"])
def test_own_attention_is_a_no_op_on_real_models(request, name):
    bundle, texts = (
        request.getfixturevalue(name),
        UNSEEN[1:],
    )  # one sentence: a float64 copy is slow
    heads = {(1, 2): _own(1, 2), (4, 5): _own(4, 5)}
    wide = replace_attention(_double(bundle), texts, heads, cache=False)
    assert abs(wide.delta_loss.iloc[0]) <= 1e-6
    # in the model's own float32 the no-op is exact up to rounding: far below a real replacement
    narrow = replace_attention(bundle, texts, heads, cache=False)
    real = replace_attention(bundle, texts, {(1, 2): "uniform", (4, 5): "uniform"})
    assert abs(narrow.delta_loss.iloc[0]) <= 1e-5
    assert abs(real.delta_loss.iloc[0]) > 100 * abs(narrow.delta_loss.iloc[0])


# value module of each family, named here (not taken from the adapter), and how V is packed
_VALUE = {
    "llama": ("self_attn.v_proj", False),
    "gpt2": ("attn.c_attn", True),
    "bert": ("attention.self.value", False),
}


@torch.no_grad()
def _by_hand(bundle, text: str, layer: int, head: int, matrix: np.ndarray) -> float:
    """Effect of replacing one head's attention, computed without the library's hooks.

    Read the value module's input on a clean forward, compute V with its weights, form the head
    output ``P @ V`` and push it through a second forward with a plain pre-hook on the output
    projection. Layers before ``layer`` are untouched, so the clean input is the replaced one.
    """
    model = bundle.model
    family = model.config.model_type
    base = model.base_model
    block = {"llama": "layers", "gpt2": "h", "bert": "encoder.layer"}[family]
    block = base.get_submodule(block)[layer]
    path, packed = _VALUE[family]
    value_mod = block.get_submodule(path)
    out_path = {
        "llama": "self_attn.o_proj",
        "gpt2": "attn.c_proj",
        "bert": "attention.output.dense",
    }
    out_mod = block.get_submodule(out_path[family])
    cfg = model.config
    n_heads = cfg.num_attention_heads if family != "gpt2" else cfg.n_head
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    width = out_mod.weight.shape[1] if family != "gpt2" else out_mod.weight.shape[0]
    d = width // n_heads
    seen = []
    handle = value_mod.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    ids = torch.tensor([list(extract(bundle, text, cache=False, progress=False)[0].token_ids)])
    clean = model(input_ids=ids)
    handle.remove()
    x = seen[0][0].double()
    if packed:  # Conv1D: x @ W + b, V is the last third
        v_all = x @ value_mod.weight.double() + value_mod.bias.double()
        v_all = v_all[:, -n_kv * d :]
    else:
        b = value_mod.bias.double() if value_mod.bias is not None else None
        v_all = F.linear(x, value_mod.weight.double(), b)
    kv = head // (n_heads // n_kv)
    v = v_all[:, kv * d : (kv + 1) * d]
    new = torch.from_numpy(matrix) @ v  # [n, d]

    def put(_m, args):
        z = args[0].clone()
        z[0, :, head * d : (head + 1) * d] = new.to(z.dtype)
        return (z,)

    handle = out_mod.register_forward_pre_hook(put)
    replaced = model(input_ids=ids)
    handle.remove()
    if bundle.kind == "causal":
        ce = [F.cross_entropy(o.logits[0, :-1].double(), ids[0, 1:]) for o in (replaced, clean)]
        return (ce[0] - ce[1]).item()
    a, b = replaced.last_hidden_state[0].double(), clean.last_hidden_state[0].double()
    return (1 - F.cosine_similarity(a, b, dim=-1)).mean().item()


@pytest.mark.parametrize(
    ("source", "layer", "head"),
    # a random tiny BERT barely moves its output (post-LN), so the encoder case is MiniLM
    [("llama", 1, 3), ("gpt2", 1, 2), ("minilm", 2, 1)],
)
def test_replacement_equals_a_hand_computation(request, tiny, source, layer, head):
    bundle = request.getfixturevalue("minilm") if source == "minilm" else tiny(source)
    text = UNSEEN[0]
    rec = extract(bundle, text, cache=False, progress=False)[0]
    rng = np.random.default_rng(1)
    raw = rng.random((rec.n_tokens, rec.n_tokens)) ** 4  # a peaked, arbitrary attention
    # the matrix the framework puts in: causal mask and row renormalisation as `predict` does
    from attn_tools.patterns import Pattern

    pat = Pattern(name="r", family="user", description="", fn=lambda _c: raw)
    framed = predict(pat, build_context(rec, with_parse=False))[0]
    if bundle.kind == "causal":
        assert np.allclose(np.triu(framed, 1), 0) and np.allclose(framed.sum(1), 1)
    want = _by_hand(bundle, text, layer, head, framed)
    got = replace_attention(bundle, [text], {(layer, head): raw}, cache=False)
    assert abs(want) > 1e-4  # the replacement matters, so agreement means something
    assert got.delta_loss.iloc[0] == pytest.approx(want, abs=2e-6)
    assert np.isnan(got.ci_low.iloc[0])  # one sentence: no interval


def test_pattern_name_equals_its_prediction_and_a_list_of_matrices(tiny):
    bundle = tiny("llama")
    recs = extract(bundle, SENTENCES, cache=False, progress=False)
    mats = [predict("previous_token", build_context(r, with_parse=False))[0] for r in recs]
    by_name = replace_attention(bundle, SENTENCES, {(0, 2): "previous_token"})
    by_list = replace_attention(bundle, SENTENCES, {(0, 2): mats})
    assert by_name.delta_loss.iloc[0] == pytest.approx(by_list.delta_loss.iloc[0], abs=1e-9)
    assert by_name.replaced.iloc[0] == "L0H2=previous_token"
    assert by_name.ci_low.iloc[0] <= by_name.delta_loss.iloc[0] <= by_name.ci_high.iloc[0]


# ----------------------------------------------------------------------------- explains_head


def test_explains_head_is_one_minus_the_ratio(tiny):
    bundle = tiny("llama")
    targets = [(0, 1, "previous_token"), (1, 3, "first_token"), (0, 1, "self")]
    table = explains_head(bundle, SENTENCES, targets, n_boot=200)
    assert tuple(table.columns) == EXPLAINS_COLUMNS
    abl = ablate_heads(bundle, SENTENCES, [(0, 1), (1, 3), (0, 1)])
    np.testing.assert_allclose(table.delta_ablate, abl.delta_loss, atol=1e-6)
    for row in table.itertuples():
        rep = replace_attention(bundle, SENTENCES, {(row.layer, row.head): row.pattern})
        assert row.delta_replace == pytest.approx(rep.delta_loss.iloc[0], abs=1e-6)
        if row.reason == "":
            assert row.explained == pytest.approx(1 - row.delta_replace / row.delta_ablate)
            assert row.ci_low <= row.explained <= row.ci_high
        else:
            assert np.isnan(row.explained) and "nothing to explain" in row.reason
    # the same head with two patterns gets two different answers
    assert table.delta_replace.iloc[0] != pytest.approx(table.delta_replace.iloc[2], abs=1e-6)


def test_explains_head_own_attention_explains_everything(tiny):
    """Sanity at the other end: a head replaced by itself explains 100% of its ablation."""
    from attn_tools.patterns import Pattern, get_pattern

    bundle = _double(tiny("gpt2"))
    recs = {r.text: r for r in extract(bundle, SENTENCES, cache=False, progress=False)}
    own = Pattern(
        name="own_L1H0",
        family="user",
        description="the head's recorded attention",
        fn=lambda ctx: recs[ctx.text].attention[1, 0].astype(np.float64),
    )
    with pytest.raises(PatternError):
        get_pattern("own_L1H0")  # not registered: passed as an object, not a name
    table = explains_head(
        bundle, SENTENCES, [(1, 0, own)], n_boot=100, cache=False, min_effect=1e-4
    )
    assert table.delta_ablate.iloc[0] > 1e-4
    assert table.explained.iloc[0] == pytest.approx(1.0, abs=1e-4)


def test_explains_head_reads_a_label_table_and_flags_tiny_effects(tiny):
    bundle = tiny("gpt2")
    labels = pd.DataFrame(
        {"layer": [0, 1, 1], "head": [0, 2, 3], "label": ["previous_token", "none", "self"]}
    )
    table = explains_head(bundle, SENTENCES[:2], labels, min_effect=1e9, n_boot=50)
    assert list(zip(table["layer"], table["head"], table["pattern"])) == [
        (0, 0, "previous_token"),
        (1, 3, "self"),
    ]
    assert table.explained.isna().all()
    assert table.reason.str.contains("nothing to explain").all()


def test_mean_method_uses_mean_ablation(tiny):
    bundle = tiny("qwen2")
    table = explains_head(bundle, SENTENCES, [(1, 1, "previous_token")], method="mean", n_boot=50)
    abl = ablate_heads(bundle, SENTENCES, [(1, 1)], method="mean")
    assert table.delta_ablate.iloc[0] == pytest.approx(abl.delta_loss.iloc[0], abs=1e-6)
    assert (table.method == "mean").all()


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_named(tiny):
    bundle = tiny("gpt2")
    with pytest.raises(ValueError, match=r"\(9, 0\).*Fix"):
        replace_attention(bundle, SENTENCES[:1], {(9, 0): "self"})
    with pytest.raises(ValueError, match="non-empty.*Fix"):
        replace_attention(bundle, SENTENCES[:1], {})
    with pytest.raises(PatternError, match="layer 0 head 0.*shape"):
        replace_attention(bundle, SENTENCES[:1], {(0, 0): np.ones((3, 3))})
    with pytest.raises(PatternError, match="negative"):
        replace_attention(bundle, SENTENCES[:1], {(0, 0): lambda r: -np.ones((r.n_tokens,) * 2)})
    with pytest.raises(ValueError, match="2 matrices for 1 sentences"):
        replace_attention(bundle, SENTENCES[:1], {(0, 0): [np.ones((2, 2))] * 2})
    with pytest.raises(PatternError, match="unknown pattern"):
        explains_head(bundle, SENTENCES[:1], [(0, 0, "no_such_pattern")])
    with pytest.raises(ValueError, match="not a \\(layer, head, pattern\\)"):
        explains_head(bundle, SENTENCES[:1], [(0, 0)])
    with pytest.raises(ValueError, match="needs layer, head"):
        explains_head(bundle, SENTENCES[:1], pd.DataFrame({"layer": [0]}))
