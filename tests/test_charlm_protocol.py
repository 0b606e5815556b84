"""Bring your own model: a module written here (not attn_tools' own) plugged in as a bundle.

The toy module deliberately uses other names and layouts than `CharTransformer` (``stack``,
``mix.o``, a separate value projection, no LayerNorm before the head) so the test exercises the
protocol rather than one implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from attn_tools import extract, load_model
from attn_tools.classify import best_fit
from attn_tools.interventions import ablate_heads
from attn_tools.models import ModelLoadError
from attn_tools.models.adapters import get_adapter
from attn_tools.models.custom import ModuleParts, bundle_from_module
from attn_tools.scoring import score_heads

SENTENCES = ["the cat sat", "a dog ran off", "we went home at noon"]


class WordyTokenizer:
    """A user's tokenizer: lower-case letters and space, one id each; no ``<unk>``."""

    special_ids = frozenset({0, 1})
    bos_id = 1
    pad_id = 0
    alphabet = " abcdefghijklmnopqrstuvwxyz"

    def encode(self, text):
        ids = [2 + self.alphabet.index(c) for c in text.lower() if c in self.alphabet]
        spans = [(i, i + 1) for i, c in enumerate(text.lower()) if c in self.alphabet]
        return ids, spans

    def decode(self, ids):
        return "".join(self.alphabet[i - 2] for i in ids if i >= 2)

    def id_to_token(self, i):
        return ["<pad>", "<bos>"][i] if i < 2 else self.alphabet[i - 2]


class Mix(nn.Module):
    def __init__(self, d, h, causal):
        super().__init__()
        self.h, self.causal = h, causal
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        split = [
            t(x).view(b, n, self.h, d // self.h).transpose(1, 2) for t in (self.q, self.k, self.v)
        ]
        q, k, v = split
        s = q @ k.transpose(-1, -2) / math.sqrt(d // self.h)
        if self.causal:
            s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        p = s.softmax(-1)
        return self.o((p @ v).transpose(1, 2).reshape(b, n, d)), p


class Layer(nn.Module):
    def __init__(self, d, h, causal):
        super().__init__()
        self.mix = Mix(d, h, causal)
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        y, p = self.mix(x)
        x = x + y
        return x + self.down(torch.relu(self.up(x))), p


class ToyLM(nn.Module):
    def __init__(self, causal=True, vocab=29, d=16, h=2, layers=2, ctx=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.where = nn.Embedding(ctx, d)
        self.stack = nn.ModuleList(Layer(d, h, causal) for _ in range(layers))
        self.out = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.emb(ids) + self.where(torch.arange(ids.shape[1]))
        atts = []
        for layer in self.stack:
            x, p = layer(x)
            atts.append(p)
        return self.out(x), atts


PARTS = ModuleParts(
    layers="stack",
    attention="mix",
    out_proj="mix.o",
    mlp_point="down",
    unembed="out",
    value="mix.v",
)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    return bundle_from_module(
        ToyLM(), WordyTokenizer(), kind="causal", name="toy", parts=PARTS, max_length=32
    )


def test_bundle_reads_sizes_from_the_module(toy):
    assert (toy.n_layers, toy.n_heads, toy.max_length, toy.bos_id) == (2, 2, 32, 1)
    assert toy.model.config.vocab_size == 29 and toy.model.config.head_dim == 8
    assert toy.special_ids == frozenset({0, 1})


def test_extract_returns_the_modules_own_attention(toy):
    recs = extract(toy, SENTENCES, cache=False, progress=False, batch_size=3)
    rec = recs[1]
    assert rec.tokens[:4] == ("<bos>", "a", " ", "d")
    assert rec.offsets[1:4] == ((0, 1), (1, 2), (2, 3))
    assert rec.special_mask.tolist() == [True] + [False] * (len(SENTENCES[1]))
    ids = torch.tensor([[1, *WordyTokenizer().encode(SENTENCES[1])[0]]])
    with torch.no_grad():
        _, atts = toy.model.inner(ids)
    expected = torch.stack([a[0] for a in atts]).numpy()
    # batched with right padding (3 sentences of different lengths) = the unpadded run
    np.testing.assert_allclose(rec.attention, expected, atol=1e-6)


def test_score_heads_and_best_fit_on_a_user_module(toy):
    recs = extract(toy, SENTENCES * 4, cache=False, progress=False)
    scores = score_heads(recs, ["previous_token", "first_token", "self", "uniform"])
    assert set(scores["layer"]) == {0, 1} and set(scores["head"]) == {0, 1}
    assert scores["mean"].between(0, 1).all()
    fit = best_fit(scores)
    assert len(fit) == 4 and {"layer", "head", "label"} <= set(fit.columns)


def test_zero_ablation_through_the_adapter_matches_a_hand_edited_copy(toy):
    adapter = get_adapter(toy)
    assert adapter.out_proj(1) is toy.model.inner.stack[1].mix.o
    table = ablate_heads(toy, SENTENCES, heads=[(1, 0)], method="zero")
    # the same ablation done by hand: zero head 0's input columns of layer 1's output projection
    edited = ToyLM()
    edited.load_state_dict(toy.model.inner.state_dict())
    with torch.no_grad():
        edited.stack[1].mix.o.weight[:, :8] = 0.0
    total, count = 0.0, 0
    for text in SENTENCES:
        ids = torch.tensor([[1, *WordyTokenizer().encode(text)[0]]])
        with torch.no_grad():
            clean = F.cross_entropy(toy.model.inner(ids)[0][0, :-1], ids[0, 1:], reduction="sum")
            hit = F.cross_entropy(edited(ids)[0][0, :-1], ids[0, 1:], reduction="sum")
        total += float(hit - clean)
        count += ids.shape[1] - 1
    assert table["delta_loss"].iloc[0] == pytest.approx(total / count, abs=1e-5)
    assert table["delta_loss"].iloc[0] != 0.0


def test_value_hook_and_residual_lens_work_on_a_user_module(toy):
    from attn_tools.interventions.lens import residual_stream

    adapter = get_adapter(toy)
    seen = []
    handle = adapter.hook_values(0, lambda v: seen.append(v.shape))
    try:
        resid = residual_stream(adapter, torch.tensor([[1, 3, 4, 5]]))
    finally:
        handle.remove()
    assert seen == [torch.Size([1, 4, 2, 8])]
    assert resid.shape == (3, 1, 4, 16)


def test_encoder_with_padding_runs_row_by_row_and_matches_single_runs():
    torch.manual_seed(1)
    enc = bundle_from_module(
        ToyLM(causal=False), WordyTokenizer(), kind="encoder", name="toy-enc",
        parts=PARTS, max_length=32,
    )  # fmt: skip
    together = extract(enc, SENTENCES, cache=False, progress=False, batch_size=3)
    alone = [extract(enc, [s], cache=False, progress=False)[0] for s in SENTENCES]
    for a, b in zip(together, alone):
        assert a.tokens[0] != "<bos>"  # encoders get no BOS
        np.testing.assert_allclose(a.attention, b.attention, atol=1e-6)
    # a full (non-causal) row: the encoder's first token attends to later tokens too
    assert together[0].attention[0, 0, 0, 1:].sum() > 0.1


def test_bad_modules_and_parts_fail_with_a_named_fix():
    tok = WordyTokenizer()
    with pytest.raises(ModelLoadError, match="attends to later positions"):
        bundle_from_module(ToyLM(causal=False), tok, kind="causal", name="x", parts=PARTS,
                           max_length=32)  # fmt: skip
    with pytest.raises(ModelLoadError, match="no module 'mix.out'"):
        bad = ModuleParts(layers="stack", attention="mix", out_proj="mix.out", mlp_point="down")
        bundle_from_module(ToyLM(), tok, kind="causal", name="x", parts=bad, max_length=32)
    with pytest.raises(TypeError, match="lacks decode"):

        class Half:
            special_ids, bos_id, pad_id = frozenset(), 1, 0

            def encode(self, text):
                return [], []

            def id_to_token(self, i):
                return "?"

        bundle_from_module(ToyLM(), Half(), kind="causal", name="x", parts=PARTS, max_length=32)

    class Scores(ToyLM):
        def forward(self, ids):
            logits, atts = super().forward(ids)
            return logits, [a.log() for a in atts]  # log-probabilities, not probabilities

    with pytest.raises(ModelLoadError, match="not a probability distribution"):
        bundle_from_module(Scores(), tok, kind="causal", name="x", parts=PARTS, max_length=32)


def test_hf_models_are_untouched_by_the_seam(smollm2):
    # the HF path keeps its own tokenizer and adapter family
    assert type(smollm2.tokenizer).__name__ != "TokenizerShim"
    assert get_adapter(smollm2).family == "llama"
    with pytest.raises(ModelLoadError, match="unknown character model"):
        load_model("char:klingon")
