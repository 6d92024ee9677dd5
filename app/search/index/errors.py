"""Errors raised by the index layer.

They are plain exceptions: the service layer decides which HTTP status, if any, they map to.
"""

from __future__ import annotations


class ShardError(Exception):
    """Base class for every error raised by the shard functions."""


class IndexDimensionMismatch(ShardError):
    """Vectors or queries do not have the dimension the shard was built with."""


class InvalidVectors(ShardError):
    """Vectors are not a finite, non-zero 2-D float array."""


class InvalidIds(InvalidVectors):
    """Ids are not unique positive 1-D int64 values (or already present in the shard)."""


class ShardFormatError(ShardError):
    """A shard file or in-memory shard is not something this module wrote or supports."""


class StaleCorpusStats(ShardError):
    """Corpus statistics were computed without the shard being searched."""


class TokenizerMismatch(ShardError):
    """A BM25 shard was tokenized by another analyzer than the configured one."""


class StemmerMismatch(TokenizerMismatch):
    """A BM25 shard was tokenized like the configured analyzer except for its stemmer (a
    knowledge base chose another one): its tokens can be made again from the stored chunk
    text, which the writer does before adding to it."""
