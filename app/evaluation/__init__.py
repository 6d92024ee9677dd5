"""Retrieval-quality evaluation on BEIR-format datasets (`cairn eval`)."""
