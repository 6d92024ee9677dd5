"""`embedding.heading_context`: a chunk is embedded with its headings in front, which lets a
query that names the subject (only the heading does) find the chunk (issue 15)."""

from __future__ import annotations

import numpy as np

from app.kit.settings import EmbeddingConfig
from ingest.embedding import load_embedder, passage_text


def test_passage_text() -> None:
    text = "It lowers blood glucose."
    assert passage_text(text, ["Metformin", "Effects"], heading_context=True) == (
        "Metformin > Effects\n\nIt lowers blood glucose."
    )
    assert passage_text(text, ["Metformin"], heading_context=False) == text
    assert passage_text(text, [], heading_context=True) == text
    assert passage_text(text, ["  "], heading_context=True) == text
    # A heading-only chunk is its own heading: not said twice.
    assert passage_text("Metformin", ["Metformin"], heading_context=True) == "Metformin"


def test_the_heading_brings_the_chunk_closer_to_a_query_naming_its_subject() -> None:
    embedder = load_embedder(EmbeddingConfig())
    chunks = [
        ("It lowers blood glucose in adults.", ["Metformin"]),
        ("It lowers fever and eases pain.", ["Paracetamol"]),
    ]
    query = embedder.embed_query("What does metformin do?")

    def scores(on: bool) -> np.ndarray:
        texts = [passage_text(t, h, heading_context=on) for t, h in chunks]
        return np.asarray(embedder.embed_passages(texts) @ query)

    without, with_headings = scores(False), scores(True)
    # With its heading the metformin chunk moves closer to the query, and ahead of the other.
    assert with_headings[0] > without[0]
    assert with_headings[0] > with_headings[1]
