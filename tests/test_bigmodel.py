"""Big models: a model split over CPU and disk by accelerate gives the plain load's attention.

The models are random tiny ones saved to a temporary folder; ``max_memory`` is set so small that
accelerate keeps the embeddings in memory and offloads the transformer blocks to disk, which is
the same machinery that splits an 8B model over GPUs, CPU and disk.
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_tools import extract, load_model
from attn_tools.extract import MAX_ATTENTION_ENV, attention_bytes, attention_cap
from attn_tools.interventions.ablation import ablate_heads
from attn_tools.models import ModelLoadError
from attn_tools.models.adapters import get_adapter

# not the sentences the code was written against: numbers, quotes, a repeated phrase
SENTENCES = [
    "Seventeen herons stood in the shallow water at dawn.",
    'She said "no" twice, then laughed, then said it again.',
    "The bridge, built in 1889, still carries the morning train.",
    "Rain on the roof, rain on the roof, and nobody came.",
]


def _save_tiny(family: str, folder, tokenizer) -> None:
    import transformers as tf

    torch.manual_seed(7)
    vocab = len(tokenizer)
    if family == "llama":
        config = tf.LlamaConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True,
        )  # fmt: skip
        model = tf.LlamaForCausalLM(config)
    else:
        config = tf.BertConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=128,
        )  # fmt: skip
        model = tf.BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory, minilm, smollm2):
    folders = {}
    for family, tok in (("llama", smollm2.tokenizer), ("bert", minilm.tokenizer)):
        folders[family] = tmp_path_factory.mktemp(family)
        _save_tiny(family, folders[family], tok)
    return folders


def _cpu_budget(plain) -> int:
    """Room for the embeddings and about half the rest: the other blocks go to disk."""
    embed = sum(p.numel() * 4 for p in plain.model.get_input_embeddings().parameters())
    total = sum(p.numel() * 4 for p in plain.model.parameters())
    return int(embed + 0.6 * (total - embed))


def _split(folder, plain, offload=None):
    return load_model(
        folder, device_map="auto", max_memory={"cpu": _cpu_budget(plain)}, offload_folder=offload
    )


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_split_model_gives_the_plain_attention(tiny_folders, tmp_path, family):
    folder = tiny_folders[family]
    plain = load_model(folder, device="cpu")
    split = _split(folder, plain, tmp_path / "off")
    placed = set(split.model.hf_device_map.values())
    assert "disk" in placed and "cpu" in placed, split.model.hf_device_map
    # offloaded weights sit on the meta device between forward passes
    assert any(p.is_meta for p in split.model.parameters())
    assert split.device == torch.device("cpu")
    # the fingerprint reads the offloaded weights back: same weights, same cache key
    assert split.fingerprint == plain.fingerprint
    a = extract(plain, SENTENCES, cache=False, progress=False)
    b = extract(split, SENTENCES, cache=False, progress=False, batch_size=3)
    for ra, rb in zip(a, b):
        assert ra.tokens == rb.tokens
        assert (
            ra.attention.shape
            == rb.attention.shape
            == (plain.n_layers, 4, ra.n_tokens, ra.n_tokens)
        )
        assert np.abs(ra.attention - rb.attention).max() <= 1e-5


def test_ablation_hooks_fire_on_a_split_model(tiny_folders, tmp_path):
    folder = tiny_folders["llama"]
    plain = load_model(folder, device="cpu")
    split = _split(folder, plain, tmp_path / "off")
    adapter = get_adapter(split)
    assert adapter.n_layers == 4 and adapter.n_heads == 4
    heads = [(0, 1), (2, 3), (3, 0)]
    got = ablate_heads(split, SENTENCES[:2], heads=heads, method="mean")
    want = ablate_heads(plain, SENTENCES[:2], heads=heads, method="mean")
    # the hooks fired: ablating a head of a random model changes the loss
    assert (got["delta_loss"].abs() > 1e-6).all()
    np.testing.assert_allclose(got["delta_loss"], want["delta_loss"], rtol=1e-5, atol=1e-6)


def test_temporary_offload_folder_is_removed_with_the_model(tiny_folders):
    folder = tiny_folders["llama"]
    bundle = _split(folder, load_model(folder, device="cpu"))
    hook_dirs = {
        Path(h.weights_map.dataset.save_folder)
        for m in bundle.model.modules()
        if (h := getattr(m, "_hf_hook", None)) is not None and getattr(h, "weights_map", None)
    }
    assert hook_dirs and all(d.name.startswith("attn_tools_offload_") for d in hook_dirs)
    assert all(d.is_dir() for d in hook_dirs)
    del bundle
    gc.collect()
    assert not any(d.exists() for d in hook_dirs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"device": "cpu", "device_map": "auto"}, r"both device='cpu' and device_map.*Fix"),
        ({"max_memory": {"cpu": "1GiB"}}, r"only apply to a split model.*device_map='auto'"),
        ({"device_map": "everywhere"}, r"device_map='everywhere' is not a strategy.*Fix"),
        ({"device_map": "auto", "max_memory": {"cpu": "lots"}}, r"max_memory\['cpu'\].*Fix"),
        ({"device_map": "auto", "max_memory": {"gpu": 10}}, r"key 'gpu'.*Fix"),
        ({"device_map": "auto", "max_memory": {99: "1GiB"}}, r"GPU 99.*CUDA device.*Fix"),
        ({"device_map": {}}, r"non-empty dict.*Fix"),
    ],
)
def test_bad_placement_is_named_before_loading(kwargs, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model("a-folder-that-is-never-read", **kwargs)


def test_memory_per_token_formula_and_cap(smollm2, monkeypatch):
    # SmolLM2-135M: 30 layers × 9 heads; 2,000 tokens is just under 4.03 GiB of float32
    assert attention_bytes(30, 9, 2000) == 30 * 9 * 2000 * 2000 * 4
    assert attention_bytes(6, 12, 10, batch=3) == 3 * 6 * 12 * 100 * 4
    assert attention_cap() == 4 * 1024**3
    assert attention_cap("8GiB") == 8 * 1024**3 and attention_cap("500MB") == 500 * 10**6
    monkeypatch.setenv(MAX_ATTENTION_ENV, "2KiB")
    assert attention_cap() == 2048
    text = "A sentence that is long enough to need more than two kibibytes."
    with pytest.raises(
        ValueError, match=r"sentence 0 .*over the cap of 2\.0 KiB.*Fix.*max_length="
    ):
        extract(smollm2, [text], cache=False, progress=False)
    monkeypatch.setenv(MAX_ATTENTION_ENV, "plenty")
    with pytest.raises(ValueError, match=r"\$ATTN_TOOLS_MAX_ATTENTION_BYTES='plenty'.*Fix"):
        extract(smollm2, [text], cache=False, progress=False)
    with pytest.raises(ValueError, match=r"max_attention_bytes=-1 .*Fix"):
        extract(smollm2, [text], cache=False, progress=False, max_attention_bytes=-1)


def test_batches_are_cut_to_the_cap(minilm):
    """A cap that fits two of these sentences per forward pass: results equal batch_size=1."""

    recs = extract(minilm, SENTENCES, cache=False, progress=False, batch_size=1)
    widest = max(r.n_tokens for r in recs)
    cap = attention_bytes(minilm.n_layers, minilm.n_heads, widest, batch=2)
    calls = []
    handle = minilm.model.register_forward_pre_hook(
        lambda _m, args, kwargs: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        capped = extract(
            minilm, SENTENCES, cache=False, progress=False, batch_size=16, max_attention_bytes=cap
        )
    finally:
        handle.remove()
    assert max(calls) <= 2 and sum(calls) == len(SENTENCES)
    for a, b in zip(recs, capped):
        assert np.abs(a.attention - b.attention).max() <= 1e-5


def test_split_model_reads_the_plain_loads_cache(tiny_folders, tmp_path):
    """Same fingerprint, same cache keys: a split model is served what a plain load cached."""
    folder = tiny_folders["llama"]
    plain = load_model(folder, device="cpu")
    first = extract(plain, SENTENCES, cache=tmp_path / "cache", progress=False)
    split = _split(folder, plain, tmp_path / "off")
    calls = []
    handle = split.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        again = extract(split, SENTENCES, cache=tmp_path / "cache", progress=False)
    finally:
        handle.remove()
    assert calls == []  # every sentence came from the cache
    assert all(np.array_equal(a.attention, b.attention) for a, b in zip(first, again))


@pytest.mark.slow
def test_real_smollm2_split_over_cpu_and_disk(smollm2, tmp_path):
    """The real SmolLM2 weights with two thirds of its layers on disk: the same attention."""
    split = load_model(
        "smollm2", device_map="auto", max_memory={"cpu": "250MB"}, offload_folder=tmp_path
    )
    on_disk = [k for k, v in split.model.hf_device_map.items() if v == "disk"]
    assert sum(k.startswith("model.layers.") for k in on_disk) >= 10, split.model.hf_device_map
    assert split.fingerprint == smollm2.fingerprint
    texts = ["Two owls, then three, then none.", "The lighthouse keeper counted ships."]
    a = extract(smollm2, texts, cache=False, progress=False)
    b = extract(split, texts, cache=False, progress=False)
    assert max(float(np.abs(x.attention - y.attention).max()) for x, y in zip(a, b)) <= 1e-5


def test_a_failed_split_load_leaves_no_offload_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json .* is broken"):
        load_model(broken, device_map="auto")
    gc.collect()
    assert not list(tmp_path.glob("attn_tools_offload_*"))
