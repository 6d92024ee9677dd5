"""Encryption at rest: tenant data keys (wrapped by the KEK, cached per process), sealed chunk
columns and cache entries, converting existing data, KEK rotation and the CLI. The primitives
every layer uses — envelopes (app/kit/envelope.py) and the KEK file (app/kit/kek.py) — live in
app/kit, which may import no domain."""
