"""Extraction: batching equals one-at-a-time, padding removal, the cache, streaming, bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import resource
from pathlib import Path

import numpy as np
import pytest
import torch

from attn_tools import extract, iter_extract, load_sentences
from attn_tools._cache import CacheWarning, atomic_path
from attn_tools.extract import check_records


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


# ----------------------------------------------------------------------------- what made a cache


def _default_slot(bundle, root: Path, text: str) -> Path:
    """The file the default settings read for ``text`` (found by extracting into a scratch root)."""
    scratch = root / "scratch"
    extract(bundle, [text], cache=scratch, progress=False)
    (made,) = scratch.rglob("*.npz")
    return root / made.relative_to(scratch)


def test_file_made_with_other_settings_is_not_served_as_the_default(minilm, tmp_path):
    """The attack: a max_length=6 entry copied to the default entry's path is rejected."""
    text = "The baker sold fresh bread to the twins."
    cache = tmp_path / "cache"
    fresh = extract(minilm, [text], cache=False, progress=False)[0]
    with pytest.warns(UserWarning, match="truncated"):
        extract(minilm, [text], cache=cache, max_length=6, progress=False)
    (short_file,) = cache.rglob("*.npz")
    target = cache / _default_slot(minilm, tmp_path, text).relative_to(tmp_path)
    assert target != short_file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(short_file.read_bytes())
    with (
        pytest.warns(CacheWarning, match=r"stale .*settings .*'max_length': 6"),
        _count_forwards(minilm) as calls,
    ):
        rec = extract(minilm, [text], cache=cache, progress=False)[0]
    assert calls == [1]
    assert not rec.truncated and rec.n_tokens == fresh.n_tokens == 11
    np.testing.assert_allclose(rec.attention, fresh.attention, atol=1e-6)
    with _count_forwards(minilm) as calls:  # the slot now holds the right entry
        extract(minilm, [text], cache=cache, progress=False)
    assert calls == []


def _rewrite_meta(path: Path, **changes) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta"]).decode("utf-8"))
    meta.update(changes)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fingerprint": "0123456789abcdef"}, r"stale .*model fingerprint '0123456789abcdef'"),
        ({"version": 1}, r"stale .*format version 1"),
        ({"settings": {"max_length": 512, "prepend_bos": True}}, r"stale .*'prepend_bos': True"),
        ({"tokens": ["[CLS]", "x"]}, r"corrupt .*token strings"),
        ({"truncated": True}, r"corrupt .*truncation flag"),
    ],
)
def test_entry_made_otherwise_is_rejected_and_recomputed(minilm, tmp_path, change, message):
    text = "A small boat crossed the lake."
    good = extract(minilm, [text], cache=tmp_path, progress=False)[0]
    (path,) = tmp_path.rglob("*.npz")
    _rewrite_meta(path, **change)
    with pytest.warns(CacheWarning, match=message), _count_forwards(minilm) as calls:
        again = extract(minilm, [text], cache=tmp_path, progress=False)[0]
    assert calls == [1]
    np.testing.assert_allclose(again.attention, good.attention, atol=1e-6)


def test_attention_that_is_not_a_distribution_is_rejected(minilm, tmp_path):
    text = "Rows of attention sum to one."
    extract(minilm, [text], cache=tmp_path, progress=False)
    (path,) = tmp_path.rglob("*.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["attention"] = arrays["attention"] * 2  # finite, right shape, wrong meaning
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.warns(CacheWarning, match="rows do not sum to 1"), _count_forwards(minilm) as c:
        rec = extract(minilm, [text], cache=tmp_path, progress=False)[0]
    assert c == [1]
    np.testing.assert_allclose(rec.attention.sum(-1), 1.0, atol=1e-5)


def test_folder_at_a_cache_path_is_reported_and_bypassed(minilm, tmp_path):
    text = "Someone left a folder where the cache file goes."
    slot = _default_slot(minilm, tmp_path, text)
    slot.mkdir(parents=True)
    (slot / "keep.txt").write_text("user data")
    for _ in range(2):  # never cached, never deleted: reported and computed each time
        with pytest.warns(CacheWarning, match=r"is a folder; computing without the cache"):
            rec = extract(minilm, [text], cache=tmp_path, progress=False)[0]
        assert rec.text == text and rec.attention.shape[:2] == (6, 12)
    assert (slot / "keep.txt").read_text() == "user data"


def test_cache_that_cannot_be_written_loses_nothing(minilm, tmp_path):
    (tmp_path / "attention").write_text("a file where the attention folder belongs")
    with pytest.warns(CacheWarning, match="could not write the attention cache"):
        recs = extract(minilm, ["One.", "Two words."], cache=tmp_path, progress=False)
    assert [r.text for r in recs] == ["One.", "Two words."]
    cache_file = tmp_path / "not-a-folder"
    cache_file.write_text("x")
    with pytest.warns(CacheWarning, match="is a file; computing without the cache"):
        (rec,) = extract(minilm, ["Three."], cache=cache_file, progress=False)
    assert rec.n_tokens == 4


# ----------------------------------------------------------------------------- bad input


def test_none_and_wrong_arguments_get_clear_errors(minilm):
    with pytest.raises(TypeError, match=r"sentences is NoneType .*Fix: pass a list of strings"):
        extract(minilm, None)
    with pytest.raises(TypeError, match=r"sentences is int"):
        iter_extract(minilm, 5)  # raised at the call, not at the first next()
    with pytest.raises(TypeError, match=r"bundle is str .*Fix: bundle = load_model\('minilm'\)"):
        extract("minilm", ["A sentence."])
    # a lone string is one sentence in both forms, never one per character
    (rec,) = list(iter_extract(minilm, "Just one.", cache=False, progress=False))
    assert rec.text == "Just one."


def test_lone_surrogate_names_its_sentence(minilm):
    broken = "An emoji cut in half: \ud83d here."
    with pytest.raises(
        ValueError, match=r"sentence 2 holds a lone surrogate '\\ud83d' at character 22"
    ):
        extract(minilm, ["Fine.", "Also fine.", broken], cache=False, progress=False)


def test_check_records_names_the_bad_record(minilm_records):
    with pytest.raises(
        TypeError, match=r"record 0 is str .*Fix: pass SentenceAttention records from extract\(\)"
    ):
        check_records(["The cat sat."])
    with pytest.raises(TypeError, match=r"record 2 is dict"):
        check_records([*minilm_records[:2], {"text": "x"}])
    with pytest.raises(TypeError, match="records is NoneType"):
        check_records(None)
    with pytest.raises(TypeError, match="records is str"):
        check_records("The cat sat.")
    with pytest.raises(TypeError, match=r"single SentenceAttention.*\[record\]"):
        check_records(minilm_records[0])
    with pytest.raises(ValueError, match="records is empty"):
        check_records([])
    assert check_records(minilm_records) is minilm_records
    # a generator is checked as it streams: the good records come out before the bad one fails
    stream = check_records(r for r in [*minilm_records[:3], 7])
    assert [r.text for r in itertools.islice(stream, 3)] == [r.text for r in minilm_records[:3]]
    with pytest.raises(TypeError, match="record 3 is int"):
        next(stream)
    rec = minilm_records[0]
    bad = dataclasses.replace(rec, attention=rec.attention[:, :, :-1, :])
    n = rec.n_tokens
    with pytest.raises(ValueError, match=rf"record 0 .*shape \(6, 12, {n - 1}, {n}\)"):
        check_records([bad])
