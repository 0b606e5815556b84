"""Generation tracing: the stitched trace equals one full forward pass over prompt + generated
tokens (which proves the KV-cache handling), on SmolLM2 and on tiny random GPT-2 and Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_adapters import save_tiny

from attn_tools import load_model
from attn_tools.interventions import GenerationTrace, residual_stream, trace_generation
from attn_tools.models.adapters import get_adapter

PROMPT = "Yesterday the old fisherman sold his boat because"


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, smollm2):
    return load_model(
        save_tiny("gpt2", tmp_path_factory.mktemp("g"), smollm2.tokenizer), device="cpu"
    )


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smollm2):
    folder = save_tiny("llama", tmp_path_factory.mktemp("l"), smollm2.tokenizer, seed=3)
    return load_model(folder, device="cpu")


@torch.no_grad()
def _full_pass(bundle, ids: tuple[int, ...]):
    """Attention ``[L, H, N, N]``, residual norms ``[L + 1, N]`` and logits of one plain pass."""
    x = torch.tensor([list(ids)])
    out = bundle.model(input_ids=x, output_attentions=True, use_cache=False)
    att = torch.stack([a[0] for a in out.attentions]).float().numpy()
    norms = residual_stream(get_adapter(bundle.model), x)[:, 0].float().norm(dim=-1).numpy()
    return att, norms, out.logits[0].float()


def _check_against_full_pass(bundle, trace: GenerationTrace) -> None:
    att, norms, logits = _full_pass(bundle, trace.token_ids)
    L, H, N, _ = att.shape
    assert (trace.n_layers, trace.n_heads, trace.n_tokens) == (L, H, N)
    for layer in range(L):
        for head in range(H):
            np.testing.assert_allclose(trace.attention_matrix(layer, head), att[layer, head],
                                       atol=1e-5, rtol=0)  # fmt: skip
    tidy = trace.norms().pivot_table(index="layer", columns="position", values="norm")
    np.testing.assert_allclose(tidy.to_numpy(), norms, rtol=1e-4)
    # greedy: each generated token is the full pass's argmax at the position before it
    want = logits[trace.n_prompt - 1 : N - 1].argmax(dim=-1).tolist()
    assert list(trace.generated_ids) == want


def test_smollm2_trace_equals_one_full_pass_with_and_without_cache(smollm2):
    trace = trace_generation(smollm2, PROMPT, 4, stop_at_eos=False)
    assert len(trace.generated_ids) == 4
    assert trace.tokens[0] == smollm2.tokenizer.convert_ids_to_tokens(smollm2.bos_id)
    # one structure: step 0 holds the prompt × prompt block, every later step one row
    first, *rest = trace.steps
    n0 = trace.n_prompt
    assert first.attention.shape == (30, 9, n0, n0) and first.positions == tuple(range(n0))
    for t, step in enumerate(rest, start=1):
        assert step.attention.shape == (30, 9, 1, n0 + t)
        assert step.norms.shape == (31, 1)
    assert rest[-1].next_token_id is None and len(trace.steps) == 5
    _check_against_full_pass(smollm2, trace)
    # without a cache every step reruns the whole text: the same trace
    plain = trace_generation(smollm2, PROMPT, 4, use_cache=False, stop_at_eos=False)
    assert plain.token_ids == trace.token_ids
    for a, b in zip(plain.steps, trace.steps):
        assert a.positions == b.positions
        np.testing.assert_allclose(a.attention, b.attention, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a.norms, b.norms, rtol=1e-4)


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_llama"])
def test_any_causal_model(request, name):
    bundle = request.getfixturevalue(name)
    trace = trace_generation(bundle, PROMPT, 5, stop_at_eos=False)
    _check_against_full_pass(bundle, trace)
    share = trace.first_token_share()
    assert list(share.columns) == ["step", "layer", "head", "position", "share"]
    assert len(share) == len(trace.steps) * bundle.n_layers * bundle.n_heads
    # the share is the last query row's weight on key 0
    step = trace.steps[2]
    got = share[share["step"] == 2].sort_values(["layer", "head"])["share"].to_numpy()
    np.testing.assert_allclose(got, step.attention[:, :, -1, 0].reshape(-1), rtol=1e-6)
    assert len(trace.norms()) == (bundle.n_layers + 1) * trace.n_tokens


def test_sampling_is_seeded_and_differs_from_greedy(tiny_gpt2):
    a = trace_generation(tiny_gpt2, PROMPT, 6, greedy=False, seed=1, stop_at_eos=False)
    b = trace_generation(tiny_gpt2, PROMPT, 6, greedy=False, seed=1, stop_at_eos=False)
    c = trace_generation(tiny_gpt2, PROMPT, 6, greedy=False, seed=2, stop_at_eos=False)
    assert a.generated_ids == b.generated_ids
    assert a.generated_ids != c.generated_ids  # a random tiny model's softmax is nearly flat
    att, _, _ = _full_pass(tiny_gpt2, a.token_ids)
    np.testing.assert_allclose(a.attention_matrix(1, 2), att[1, 2], atol=1e-5)


def test_encoders_and_bad_arguments_are_refused(minilm, tiny_gpt2):
    with pytest.raises(ValueError, match="encoder model.*Fix:"):
        trace_generation(minilm, PROMPT, 3)
    with pytest.raises(ValueError, match="max_new_tokens.*Fix:"):
        trace_generation(tiny_gpt2, PROMPT, 0)
    with pytest.raises(ValueError, match="exceeds.*context.*Fix:"):
        trace_generation(tiny_gpt2, PROMPT, 200)  # the tiny model holds 64 positions
    with pytest.raises(ValueError, match="empty"):
        trace_generation(tiny_gpt2, "   ", 3)
    with pytest.raises(TypeError, match="not a ModelBundle"):
        trace_generation("smollm2", PROMPT, 3)  # type: ignore[arg-type]
    trace = trace_generation(tiny_gpt2, PROMPT, 2)
    with pytest.raises(IndexError, match="outside"):
        trace.attention_matrix(5, 0)


def test_trace_figures(tiny_llama):
    from attn_tools import viz

    trace = trace_generation(tiny_llama, PROMPT, 4, stop_at_eos=False)
    growth = viz.plot_norm_growth(trace)
    lines = growth.axes[0].get_lines()
    assert len(lines) == len(trace.steps)
    np.testing.assert_allclose(lines[-1].get_ydata(), trace.steps[-1].norms[:, 0], rtol=1e-6)
    heat = viz.plot_generation_attention(trace, 1, 2)
    image = heat.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(np.asarray(image), trace.attention_matrix(1, 2))
    share = viz.plot_first_token_share(trace)
    grid = np.asarray(share.axes[0].get_images()[0].get_array())
    assert grid.shape == (tiny_llama.n_layers, len(trace.steps))
    want = trace.steps[1].attention[:, :, -1, 0].mean(axis=1)
    np.testing.assert_allclose(grid[:, 1], want, rtol=1e-6)
