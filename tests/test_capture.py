"""Activation capture and top neurons, checked against extract and hand computations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_adapters import save_tiny

from attn_tools import extract, load_model
from attn_tools._cache import CacheWarning
from attn_tools.interventions import NEURON_COLUMNS, capture, iter_capture, top_neurons

SENTENCES = [
    "A violinist tuned her strings while the audience whispered.",
    "Nobody expected the ferry to leave forty minutes early.",
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smollm2):
    return load_model(
        save_tiny("llama", tmp_path_factory.mktemp("l"), smollm2.tokenizer, seed=2), device="cpu"
    )


@pytest.mark.parametrize("name", ["smollm2", "minilm"])
def test_attention_and_ids_equal_extract(request, name, tmp_path):
    bundle = request.getfixturevalue(name)
    recs = extract(bundle, SENTENCES, cache=False, progress=False)
    acts = capture(bundle, SENTENCES, ("attention", "resid_post"), cache=tmp_path)
    for rec, act in zip(recs, acts):
        assert act.token_ids == rec.token_ids and act.tokens == rec.tokens
        # extract pads a batch; capture runs each sentence alone: equal up to float32 rounding
        np.testing.assert_allclose(act.attention, rec.attention, atol=1e-5)
        assert act.resid_post.shape == (
            bundle.n_layers,
            rec.n_tokens,
            bundle.model.config.hidden_size,
        )
        assert act.mlp_post is None and act.head_out is None


def test_last_resid_is_the_models_final_hidden_state(smollm2, minilm):
    for bundle in (smollm2, minilm):
        act = capture(bundle, SENTENCES[0], ("resid_post",), cache=False)[0]
        ids = torch.tensor([list(act.token_ids)])
        with torch.no_grad():
            out = bundle.model(input_ids=ids, output_hidden_states=True)
            base = bundle.model.base_model
            last = act.resid_post[-1]
            normed = base.norm(torch.from_numpy(last)).numpy() if bundle.kind == "causal" else None
        if bundle.kind == "causal":
            # Llama's last hidden state is the final norm of the last residual
            want = normed
            np.testing.assert_allclose(want, out.hidden_states[-1][0].numpy(), atol=1e-4)
            # and every earlier residual is the model's own hidden state
            for la in range(bundle.n_layers - 1):
                np.testing.assert_allclose(
                    act.resid_post[la], out.hidden_states[la + 1][0].numpy(), atol=1e-4
                )
        else:  # post-LN BERT: the block output is the final hidden state
            np.testing.assert_allclose(last, out.last_hidden_state[0].numpy(), atol=1e-5)


def test_mlp_post_and_head_out_equal_a_hand_computation(tiny_llama):
    act = capture(tiny_llama, SENTENCES[1], ("mlp_post", "head_out", "resid_post"), cache=False)[0]
    model = tiny_llama.model.model
    layer = model.layers[1]
    x = torch.from_numpy(act.resid_post[0])[None]  # residual entering block 1
    with torch.no_grad():
        # MLP input = residual after block 1's attention; rebuild it by hand from head_out
        heads = torch.from_numpy(act.head_out[1])  # [n, H, d]
        attn_out = layer.self_attn.o_proj(heads.reshape(heads.shape[0], -1))[None]
        mid = x + attn_out
        h = layer.post_attention_layernorm(mid)
        gate = torch.nn.functional.silu(h @ layer.mlp.gate_proj.weight.T)
        hand = gate * (h @ layer.mlp.up_proj.weight.T)
        np.testing.assert_allclose(act.mlp_post[1], hand[0].numpy(), atol=1e-5)
        # and the block's output is mid + down_proj(hand)
        out = mid + layer.mlp.down_proj(hand)
        np.testing.assert_allclose(act.resid_post[1], out[0].numpy(), atol=1e-5)
    assert act.head_out.shape == (2, act.n_tokens, 4, 8)


def test_cache_is_keyed_by_what_and_survives_damage(tiny_llama, tmp_path):
    first = capture(tiny_llama, SENTENCES[:1], ("mlp_post",), cache=tmp_path)[0]
    files = list((tmp_path / "activations").rglob("*.npz"))
    assert len(files) == 1
    again = capture(tiny_llama, SENTENCES[:1], ("mlp_post",), cache=tmp_path)[0]
    np.testing.assert_array_equal(first.mlp_post, again.mlp_post)
    capture(tiny_llama, SENTENCES[:1], ("mlp_post", "head_out"), cache=tmp_path)
    assert len(list((tmp_path / "activations").rglob("*.npz"))) == 2  # another key for `what`
    files[0].write_bytes(b"not an npz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fixed = capture(tiny_llama, SENTENCES[:1], ("mlp_post",), cache=tmp_path)[0]
    assert any(issubclass(w.category, CacheWarning) for w in caught)
    np.testing.assert_array_equal(fixed.mlp_post, first.mlp_post)


def test_iter_capture_streams(tiny_llama):
    def endless():
        i = 0
        while True:
            yield f"Sentence number {i} is here."
            i += 1

    stream = iter_capture(tiny_llama, endless(), "resid_post", cache=False)
    got = [next(stream) for _ in range(3)]
    assert [a.text for a in got] == [f"Sentence number {i} is here." for i in range(3)]


def test_top_neurons_ranks_by_max_activation(tiny_llama):
    texts = SENTENCES + ["The dog barked twice."]
    table = top_neurons(tiny_llama, texts, layer=1, k=5, cache=False)
    assert tuple(table.columns) == NEURON_COLUMNS and len(table) == 5
    acts = capture(tiny_llama, texts, ("mlp_post",), cache=False)
    stacked = np.concatenate([a.mlp_post[1] for a in acts])  # [tokens, d_mlp]
    order = np.argsort(-stacked.max(0), kind="stable")[:5]
    assert table.neuron.tolist() == order.tolist()
    np.testing.assert_allclose(table.max_activation, stacked.max(0)[order], rtol=1e-6)
    np.testing.assert_allclose(table.mean_activation, stacked.mean(0)[order], rtol=1e-5)
    # the first listed token is where the maximum is
    best = table.iloc[0]
    flat = int(np.argmax(stacked[:, best.neuron]))
    lengths = np.cumsum([a.n_tokens for a in acts])
    s = int(np.searchsorted(lengths, flat, side="right"))
    assert best.top_sentence == texts[s]
    assert f"s{s}:" in best.top_tokens.split(" | ")[0]


def test_bad_input_is_named(tiny_llama):
    with pytest.raises(ValueError, match="what=.*Fix"):
        capture(tiny_llama, SENTENCES, ("neurons",))
    with pytest.raises(ValueError, match="k=0.*Fix"):
        top_neurons(tiny_llama, SENTENCES, layer=0, k=0)
    with pytest.raises(IndexError, match="layer 7.*Fix"):
        top_neurons(tiny_llama, SENTENCES, layer=7)
    with pytest.raises(ValueError, match="empty"):
        capture(tiny_llama, ["fine", " "], "resid_post", cache=False)
