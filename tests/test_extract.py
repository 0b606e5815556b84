"""Extraction: batching equals one-at-a-time, padding removal, the cache, streaming, bad input."""

from __future__ import annotations

import contextlib
import itertools
import resource
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_tools import extract, iter_extract, load_sentences
from attn_tools._cache import atomic_path


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _count_forwards(bundle):
    calls = []
    handle = bundle.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_batched_equals_one_at_a_time(request, name):
    """Padding and batching change nothing: equal to 1e-5 (bitwise on one thread).

    With several threads the BLAS reduction order depends on the matrix shapes, which moves
    float32 results by about 1e-6 per layer (30 layers for SmolLM2); on one thread the order is
    fixed and the results are identical, which is what shows the padding is removed correctly.
    """
    bundle = request.getfixturevalue(name)
    sentences = load_sentences("all")[::11][:20]  # mixed lengths, so batches carry padding
    with _threads(1):
        batched = extract(bundle, sentences, batch_size=8, cache=False, progress=False)
        single = [
            extract(bundle, s, batch_size=1, cache=False, progress=False)[0] for s in sentences
        ]
    assert len({r.n_tokens for r in batched}) > 5
    for b, s in zip(batched, single):
        assert b.tokens == s.tokens and b.offsets == s.offsets
        assert np.abs(b.attention - s.attention).max() <= 1e-5
    multi = extract(bundle, sentences, batch_size=8, cache=False, progress=False)
    worst = max(np.abs(m.attention - s.attention).max() for m, s in zip(multi, single))
    assert worst <= 1e-4


def test_records_are_well_formed(minilm_records, smollm2_records, story_sentences):
    for recs in (minilm_records, smollm2_records):
        assert [r.text for r in recs] == story_sentences
        for r in recs:
            n = r.n_tokens
            assert r.attention.dtype == np.float32 and r.attention.shape[2:] == (n, n)
            assert len(r.offsets) == len(r.token_ids) == r.special_mask.shape[0] == n
            np.testing.assert_allclose(r.attention.sum(-1), 1.0, atol=1e-5)
    enc = minilm_records[0]
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    assert enc.special_mask[[0, -1]].all() and not enc.special_mask[1:-1].any()
    dec = smollm2_records[0]
    assert dec.special_mask[0] and dec.tokens[0] == "<|im_start|>"
    assert np.triu(dec.attention, k=1).max() == 0.0  # causal: nothing attends ahead
    # offsets point into the text: the readable labels are the text's own characters
    assert enc.labels[1:-1] == [enc.text[s:e] for s, e in enc.offsets[1:-1]]


def test_empty_and_non_string_sentences_are_refused(minilm):
    with pytest.raises(ValueError, match=r"sentence 1 is empty or whitespace"):
        extract(minilm, ["Fine.", "   \n"], cache=False, progress=False)
    with pytest.raises(TypeError, match="sentence 0 is int"):
        extract(minilm, [3], cache=False, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract(minilm, ["Fine."], batch_size=0, progress=False)
    # the index is right past the first window of 4 × batch_size sentences
    with pytest.raises(ValueError, match=r"sentence 64 is empty"):
        extract(minilm, ["ok"] * 64 + [""], batch_size=16, cache=False, progress=False)


def test_attention_too_large_for_memory_is_refused_by_name(smollm2):
    text = "One two three four five six seven eight nine ten."
    with pytest.raises(ValueError, match=r"sentence 0 .*GiB.*max_length=\d+"):
        extract(
            smollm2, [text], max_attention_bytes=30 * 9 * 8 * 8 * 4, cache=False, progress=False
        )


def test_long_input_is_truncated_with_a_warning(minilm):
    text = "A very long sentence about nothing in particular goes on and on."
    with pytest.warns(UserWarning, match=r"A very long sentence.*truncated to 8"):
        rec = extract(minilm, [text], max_length=8, cache=False, progress=False)[0]
    assert rec.truncated and rec.n_tokens == 8
    assert rec.tokens[0] == "[CLS]" and rec.tokens[-1] == "[SEP]"


def test_cache_hit_does_no_forward_pass(minilm, tmp_path, story_sentences):
    first = extract(minilm, story_sentences[:6], cache=tmp_path, progress=False)
    files = sorted(tmp_path.rglob("*.npz"))
    assert len(files) == 6
    with _count_forwards(minilm) as calls:
        second = extract(minilm, story_sentences[:6], cache=tmp_path, progress=False)
    assert calls == []
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.attention, b.attention)
        assert a.tokens == b.tokens and a.offsets == b.offsets and a.token_ids == b.token_ids
    # a different setting is a different key: no stale reuse
    with _count_forwards(minilm) as calls, pytest.warns(UserWarning, match="truncated"):
        extract(minilm, story_sentences[:1], cache=tmp_path, max_length=6, progress=False)
    assert calls == [1]


@pytest.mark.parametrize("damage", ["garbage", "truncate", "other_text"])
def test_corrupt_cache_file_is_reported_and_recomputed(minilm, tmp_path, damage):
    text = "The baker sold bread to the twins."
    good = extract(minilm, [text], cache=tmp_path, progress=False)[0]
    path = next(tmp_path.rglob("*.npz"))
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    else:  # a valid file holding another sentence's attention
        other = tmp_path / "other"
        extract(minilm, ["Something else entirely."], cache=other, progress=False)
        path.write_bytes(next(other.rglob("*.npz")).read_bytes())
    with pytest.warns(UserWarning, match="corrupt"), _count_forwards(minilm) as calls:
        again = extract(minilm, [text], cache=tmp_path, progress=False)[0]
    assert calls == [1]
    np.testing.assert_allclose(again.attention, good.attention, atol=1e-6)
    with _count_forwards(minilm) as calls:  # the rewritten file is good again
        extract(minilm, [text], cache=tmp_path, progress=False)
    assert calls == []


def test_atomic_writes_leave_old_file_or_nothing(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"v1")
        assert not target.exists()  # not visible until complete
    assert target.read_bytes() == b"v1"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"v1"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]  # no temp left behind


def test_iter_extract_is_lazy(minilm):
    """The input is read a window at a time: the first record arrives before the rest is read."""
    consumed = itertools.count()

    def sentences():
        for i in range(10_000):
            next(consumed)
            yield f"Line number {i} is short."

    stream = iter_extract(minilm, sentences(), batch_size=4, cache=False, progress=False)
    first = next(stream)
    assert first.text == "Line number 0 is short."
    assert next(consumed) <= 4 * 4 + 1  # one window of 4 × batch_size, not 10,000
    stream.close()


@pytest.mark.slow
def test_streaming_10000_sentences_keeps_memory_bounded(minilm):
    def sentences():
        for i in range(10_000):
            yield f"Sentence {i} has {i % 7 + 3} small words in it."

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    count, tokens = 0, 0
    for rec in iter_extract(minilm, sentences(), batch_size=64, cache=False, progress=False):
        count += 1
        tokens += rec.n_tokens
        if count == 1000:
            after_1000 = rss_mb()
    growth = rss_mb() - after_1000
    assert count == 10_000 and tokens > 100_000
    # 9,000 more records (~80 MB of attention if kept) must not grow the peak memory
    assert growth < 40, f"peak RSS grew by {growth:.0f} MB while streaming"


def test_cache_files_live_under_the_model_fingerprint(minilm, tmp_path):
    extract(minilm, ["One short line."], cache=tmp_path, progress=False)
    (path,) = tmp_path.rglob("*.npz")
    assert Path(path).relative_to(tmp_path).parts[:2] == ("attention", minilm.fingerprint)
