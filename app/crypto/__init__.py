"""Encryption at rest: a key-encryption key (KEK) from a file, one data key per tenant stored
only wrapped by it, and AES-256-GCM envelopes bound to the tenant and the object they hold."""
