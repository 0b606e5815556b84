"""Logit lens and head ablation, each checked against an independent computation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_adapters import save_tiny

from attn_tools import extract, load_model
from attn_tools.interventions import ABLATION_COLUMNS, LENS_COLUMNS, ablate_heads, logit_lens
from attn_tools.models.adapters import get_adapter

SENTENCES = [
    "The small dog ran home before the rain started.",
    "She wrote the letter, sealed it and walked to the post office.",
    "Prices rose again in March.",
]


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, smollm2):
    return load_model(
        save_tiny("gpt2", tmp_path_factory.mktemp("g"), smollm2.tokenizer), device="cpu"
    )


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smollm2):
    folder = save_tiny("llama", tmp_path_factory.mktemp("l"), smollm2.tokenizer, seed=3)
    return load_model(folder, device="cpu")


def _ids(bundle, text: str) -> torch.Tensor:
    """Token ids as `extract` records them (its own code path, not the interventions')."""
    rec = extract(bundle, text, cache=False, progress=False)[0]
    return torch.tensor([list(rec.token_ids)])


@torch.no_grad()
def _mean_ce(model, bundle, texts) -> tuple[float, int]:
    """Token-weighted mean next-token cross-entropy over ``texts``, computed plainly."""
    total, count = 0.0, 0
    for text in texts:
        ids = _ids(bundle, text)
        logits = model(input_ids=ids).logits[0, :-1].double()
        total += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return total / count, count


def _zero_head_weights(model, bundle, layer: int, head: int):
    """A deep copy of the model whose output projection ignores ``head`` of ``layer``."""
    clone = copy.deepcopy(model)
    adapter = get_adapter(clone)
    proj, cols = adapter.out_proj(layer), adapter.head_slice(head)
    with torch.no_grad():
        if isinstance(proj, torch.nn.Linear):
            proj.weight[:, cols] = 0.0
        else:  # GPT-2 Conv1D: weight is [in, out]
            proj.weight[cols, :] = 0.0
    return clone


# ----------------------------------------------------------------------------- logit lens


@pytest.mark.parametrize("name", ["smollm2", "tiny_gpt2"])
def test_lens_last_layer_is_the_models_own_prediction(request, name):
    bundle = request.getfixturevalue(name)
    text = "The cat sat on the mat because it was warm."
    lens = logit_lens(bundle, text)
    assert tuple(lens.columns) == LENS_COLUMNS
    ids = _ids(bundle, text)
    n = ids.shape[1]
    assert len(lens) == (bundle.n_layers + 1) * n
    assert sorted(lens.layer.unique()) == list(range(bundle.n_layers + 1))
    with torch.no_grad():
        probs = torch.softmax(bundle.model(input_ids=ids).logits[0].double(), dim=-1)
    last = lens[lens.layer == bundle.n_layers].sort_values("position")
    top_p, top_i = probs.max(-1)
    assert last.top_token_id.tolist() == top_i.tolist()
    np.testing.assert_allclose(last.prob.to_numpy(), top_p.numpy(), atol=1e-5)
    assert last.token.tolist() == bundle.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    # rank of the actual next token, recomputed from the model's probabilities
    nxt = ids[0, 1:]
    want = (probs[:-1] > probs[:-1].gather(1, nxt[:, None])).sum(1)
    assert last.rank_of_actual_next.iloc[:-1].astype(int).tolist() == want.tolist()
    assert last.rank_of_actual_next.isna().tolist() == [False] * (n - 1) + [True]
    # probabilities are probabilities; layer 0 is not already the answer on a trained model
    assert lens.prob.between(0, 1).all()


def test_lens_refuses_an_encoder(minilm):
    with pytest.raises(ValueError, match="encoder without an LM head.*Fix"):
        logit_lens(minilm, "The cat sat.")


# ----------------------------------------------------------------------------- ablation


@pytest.mark.parametrize(
    ("name", "heads", "texts"),
    [
        ("tiny_gpt2", [(0, 1), (1, 3)], SENTENCES),
        ("tiny_llama", [(0, 0), (1, 3)], SENTENCES),  # GQA: 4 query heads, 2 kv heads
        ("smollm2", [(2, 4), (11, 0)], SENTENCES[:2]),
    ],
)
def test_zero_ablation_equals_zeroed_weights(request, name, heads, texts):
    bundle = request.getfixturevalue(name)
    table = ablate_heads(bundle, texts, heads=heads, method="zero")
    assert tuple(table.columns) == ABLATION_COLUMNS
    assert (table.measure == "delta_next_token_ce_nats").all()
    clean, n_tokens = _mean_ce(bundle.model, bundle, texts)
    assert (table.n_tokens == n_tokens).all()
    for (layer, head), row in zip(heads, table.itertuples()):
        assert (row.layer, row.head) == (layer, head)
        ablated, _ = _mean_ce(_zero_head_weights(bundle.model, bundle, layer, head), bundle, texts)
        assert row.delta_loss == pytest.approx(ablated - clean, abs=1e-5)
        assert row.ci_low <= row.delta_loss <= row.ci_high


def test_mean_ablation_equals_adding_the_mean(tiny_gpt2):
    bundle, layer, head = tiny_gpt2, 1, 2
    reference = ["A quiet morning on the farm.", "Birds sang loudly over the river bank."]
    adapter = get_adapter(bundle)
    cols = adapter.head_slice(head)
    # the head's mean output over every reference token, read with a plain hook
    rows = []
    hook = adapter.out_proj(layer).register_forward_pre_hook(
        lambda _m, args: rows.append(args[0][0, :, cols].double())
    )
    with torch.no_grad():
        for text in reference:
            bundle.model(input_ids=_ids(bundle, text))
    hook.remove()
    mean = torch.cat(rows).mean(0)
    # replacing the slice by the mean == zeroing its weights and adding W[slice] · mean to the bias
    clone = copy.deepcopy(bundle.model)
    proj = get_adapter(clone).out_proj(layer)
    with torch.no_grad():
        proj.bias += (mean @ proj.weight[cols, :].double()).float()
        proj.weight[cols, :] = 0.0
    clean, _ = _mean_ce(bundle.model, bundle, SENTENCES)
    ablated, _ = _mean_ce(clone, bundle, SENTENCES)
    table = ablate_heads(bundle, SENTENCES, [(layer, head)], method="mean", reference=reference)
    assert table.delta_loss.iloc[0] == pytest.approx(ablated - clean, abs=1e-5)
    assert (table.method == "mean").all()
    # the default reference is the measured sentences themselves: a different mean, another effect
    own = ablate_heads(bundle, SENTENCES, [(layer, head)], method="mean")
    assert own.delta_loss.iloc[0] != pytest.approx(table.delta_loss.iloc[0], abs=1e-7)


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_batched_equals_one_forward_per_head(tiny_llama, method):
    batched = ablate_heads(tiny_llama, SENTENCES, "all", method=method)
    odd = ablate_heads(tiny_llama, SENTENCES, "all", method=method, variants_per_forward=3)
    loop = ablate_heads(tiny_llama, SENTENCES, "all", method=method, variants_per_forward=1)
    assert len(batched) == tiny_llama.n_layers * tiny_llama.n_heads
    assert batched.delta_loss.abs().max() > 1e-4  # the heads matter on this random model
    for other in (odd, loop):
        np.testing.assert_allclose(batched.delta_loss, other.delta_loss, atol=1e-5, rtol=0)
        np.testing.assert_allclose(batched.ci_low, other.ci_low, atol=1e-5, rtol=0)


def test_encoder_effect_is_cosine_to_the_clean_output(minilm):
    texts, layer, head = SENTENCES[:2], 3, 5
    table = ablate_heads(minilm, texts, [(layer, head), (0, 0)])
    assert (table.measure == "one_minus_cosine_final_hidden").all()
    clone = copy.deepcopy(minilm.model)
    with torch.no_grad():
        get_adapter(clone).out_proj(layer).weight[:, get_adapter(clone).head_slice(head)] = 0.0
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = _ids(minilm, text)
            a = clone(input_ids=ids).last_hidden_state[0].double()
            b = minilm.model(input_ids=ids).last_hidden_state[0].double()
            total += (1 - F.cosine_similarity(a, b, dim=-1)).sum().item()
            count += ids.shape[1]
    assert table.delta_loss.iloc[0] == pytest.approx(total / count, abs=1e-5)
    assert (table.n_tokens == count).all()
    assert (table.delta_loss >= -1e-6).all()


def test_one_sentence_has_no_interval(tiny_gpt2):
    table = ablate_heads(tiny_gpt2, "The dog barked at night.", [(0, 0)])
    assert np.isnan(table.ci_low.iloc[0]) and np.isnan(table.ci_high.iloc[0])
    assert np.isfinite(table.delta_loss.iloc[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "erase"}, "method='erase'.*Fix"),
        ({"heads": [(9, 0)]}, r"\(9, 0\).*Fix"),
        ({"heads": "some"}, "heads='some'.*Fix"),
        ({"heads": []}, "heads is empty.*Fix"),
        ({"variants_per_forward": 0}, "variants_per_forward=0"),
    ],
)
def test_bad_arguments_are_named(tiny_gpt2, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ablate_heads(tiny_gpt2, SENTENCES[:1], **kwargs)


def test_bad_sentences_are_named(tiny_gpt2):
    with pytest.raises(ValueError, match="sentences must be a non-empty list"):
        ablate_heads(tiny_gpt2, [], [(0, 0)])
    with pytest.raises(ValueError, match="sentence 1 is empty"):
        ablate_heads(tiny_gpt2, ["A dog.", "  "], [(0, 0)])
