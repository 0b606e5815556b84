"""Architecture adapters, checked on random tiny models of every family and the real packs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attn_tools import load_model
from attn_tools.models.adapters import AdapterError, get_adapter, list_families


def save_tiny(family: str, folder: Path, tokenizer, seed: int = 0) -> Path:
    """A random-weight model of ``family`` saved with ``tokenizer``, loadable by `load_model`."""
    import transformers as tf

    torch.manual_seed(seed)
    vocab = len(tokenizer)
    common = {"vocab_size": vocab, "bos_token_id": tokenizer.bos_token_id}
    if family == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4))
    elif family == "gpt_neo":
        model = tf.GPTNeoForCausalLM(
            tf.GPTNeoConfig(
                hidden_size=32,
                num_layers=2,
                num_heads=4,
                attention_types=[[["global", "local"], 1]],
                max_position_embeddings=64,
                **common,
            )
        )
    elif family == "bert":
        model = tf.BertModel(
            tf.BertConfig(
                vocab_size=vocab,
                hidden_size=32,
                num_hidden_layers=3,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=64,
            )
        )
    else:
        classes = {
            "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, {}),
            "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, {}),
            # head_dim 16 ≠ hidden/heads: the output projection's input is 64 wide, not 32
            "gemma3_text": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM, {"head_dim": 16}),
        }
        config_cls, model_cls, extra = classes[family]
        model = model_cls(
            config_cls(
                hidden_size=32,
                intermediate_size=48,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
                **extra,
                **common,
            )
        )
    if family == "gpt2":
        model.config.vocab_size = vocab
        model.resize_token_embeddings(vocab)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


FAMILIES = [
    # family, tokenizer source, kind, layers, heads, kv heads, head_dim, d_mlp
    ("bert", "minilm", "encoder", 3, 4, 4, 8, 64),
    ("gpt2", "smollm2", "causal", 2, 4, 4, 8, 128),
    ("gpt_neo", "smollm2", "causal", 2, 4, 4, 8, 128),
    ("llama", "smollm2", "causal", 2, 4, 2, 8, 48),
    ("qwen2", "smollm2", "causal", 2, 4, 2, 8, 48),
    ("gemma3_text", "smollm2", "causal", 2, 4, 2, 16, 48),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, request):
    """family → a loaded tiny bundle (built once per module)."""
    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            tok_from = next(t for f, t, *_ in FAMILIES if f == family)
            tokenizer = request.getfixturevalue(tok_from).tokenizer
            folder = save_tiny(family, tmp_path_factory.mktemp(family), tokenizer)
            cache[family] = load_model(folder, device="cpu")
        return cache[family]

    return get


def test_every_listed_family_is_tested():
    assert sorted(f for f, *_ in FAMILIES) == list_families()


@pytest.mark.parametrize(("family", "tok", "kind", "L", "H", "KV", "D", "M"), FAMILIES)
def test_adapter_maps_every_part(tiny, family, tok, kind, L, H, KV, D, M):
    bundle = tiny(family)
    adapter = get_adapter(bundle)
    assert adapter.family == family
    assert (adapter.kind, adapter.n_layers, adapter.n_heads, adapter.n_kv_heads) == (kind, L, H, KV)
    assert adapter.head_dim == D
    assert adapter.bos == ("cls" if kind == "encoder" else "prepend")
    seen: dict[str, tuple[int, ...]] = {}

    def grab(name):
        def hook(_m, args):
            seen[name] = tuple(args[0].shape)

        return hook

    handles = [
        adapter.out_proj(L - 1).register_forward_pre_hook(grab("o")),
        adapter.mlp_point(0).register_forward_pre_hook(grab("mlp")),
        adapter.hook_values(L - 1, lambda v: seen.__setitem__("v", tuple(v.shape))),
    ]
    ids = bundle.tokenizer("The small dog ran home.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = bundle.model(input_ids=ids)
    for h in handles:
        h.remove()
    n = ids.shape[1]
    assert seen["o"] == (1, n, H * D)
    assert seen["mlp"] == (1, n, M)
    assert seen["v"] == (1, n, KV, D)  # value vectors per kv head, before GQA repetition
    assert [adapter.kv_head(h) for h in range(H)] == [h // (H // KV) for h in range(H)]
    assert adapter.attention(0) in list(adapter.layer(0).modules())
    assert adapter.head_slice(H - 1) == slice((H - 1) * D, H * D)
    if kind == "causal":
        assert adapter.unembed is bundle.model.get_output_embeddings()
        assert adapter.final_norm is not None
        # the adapter's norm + head reproduce the model's logits from its last residual
        from attn_tools.interventions import residual_stream

        resid = residual_stream(adapter, ids)
        torch.testing.assert_close(adapter.logits(resid[-1]), out.logits, atol=1e-5, rtol=1e-5)
    else:
        assert adapter.unembed is None and adapter.final_norm is None
        with pytest.raises(AdapterError, match="no LM head"):
            adapter.logits(out.last_hidden_state)
    with pytest.raises(IndexError, match="out of range"):
        adapter.layer(L)
    with pytest.raises(IndexError, match="out of range"):
        adapter.head_slice(H)


@pytest.mark.parametrize("family", [f for f, *_ in FAMILIES])
def test_generic_fallback_finds_the_same_modules(tiny, family):
    bundle = tiny(family)
    listed, generic = get_adapter(bundle), get_adapter(bundle.model, generic=True)
    assert generic.family == "generic"
    assert generic.kind == listed.kind
    for i in range(listed.n_layers):
        assert generic.out_proj(i) is listed.out_proj(i)
        assert generic.mlp_point(i) is listed.mlp_point(i)
        assert generic.value_proj(i) is listed.value_proj(i)
        assert generic.layer(i) is listed.layer(i)
    assert generic.final_norm is listed.final_norm


@pytest.mark.parametrize(
    ("name", "family", "sizes"),
    [("minilm", "bert", (6, 12, 12, 32)), ("smollm2", "llama", (30, 9, 3, 64))],
)
def test_real_models(request, name, family, sizes):
    bundle = request.getfixturevalue(name)
    adapter = get_adapter(bundle)
    assert adapter.family == family
    assert (adapter.n_layers, adapter.n_heads, adapter.n_kv_heads, adapter.head_dim) == sizes
    assert adapter.out_proj(0).in_features == sizes[1] * sizes[3]


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="Fix: pass load_model"):
        get_adapter("smollm2")
