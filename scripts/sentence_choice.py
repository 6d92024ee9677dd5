"""How often the sentence chosen as closest to a question holds its gold answer span, with
and without the subject rule of `app.chat.quotes.best_sentences` (a document's title words
counting half a word together), over each question's own gold paragraph.

    .venv/bin/python scripts/sentence_choice.py ../shared/eval/cmrc2018-trial --skip-seed 16

`--skip-seed S` leaves out the 100 questions `cairn eval answers --sample 100 --seed S`
tunes on, so the figures are for questions the answer settings were not chosen on. Prints,
for the chosen sentence alone and with the one or two after it, the share of questions whose
gold span it holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.chat.quotes import best_sentences, sentences, words
from app.evaluation.answers import contains_gold, load_gold, sample_queries
from app.evaluation.beir import load_beir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--skip-seed", type=int, action="append", default=[])
    args = parser.parse_args()
    dataset = load_beir(args.dataset)
    gold = load_gold(args.dataset)
    skipped = {q for s in args.skip_seed for q in sample_queries(dataset, gold, size=100, seed=s)}
    asked = [q for q in sorted(dataset.queries) if gold.get(q) and q not in skipped]
    held = {
        (rule, n): 0 for rule in ("every word counts one", "subject words half") for n in (1, 2, 3)
    }
    for query_id in asked:
        title, text = dataset.corpus[next(iter(dataset.qrels[query_id]))]
        parts = sentences(text)
        question = words(dataset.queries[query_id])
        for rule, subject in (("every word counts one", []), ("subject words half", words(title))):
            picked = best_sentences(text, question, subject=subject)
            start = picked[0] if picked else 0
            for n in (1, 2, 3):
                held[rule, n] += contains_gold("".join(parts[start : start + n]), gold[query_id])
    sys.stdout.write(f"{len(asked)} questions (skipped seeds: {args.skip_seed or 'none'})\n")
    for (rule, n), count in held.items():
        after = "" if n == 1 else f" + {n - 1} after"
        sys.stdout.write(f"{rule:22s} sentence{after}: {count / len(asked):.3f}\n")


if __name__ == "__main__":
    main()
