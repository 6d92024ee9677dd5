"""Answer generation: one protocol (`base.Generator`), one module per backend, and the loader
that picks the configured one. Importing this package loads no model and no torch."""
