"""Caches shared by the answer service and search: a small key-value store (process memory or
Redis) and the tenant content version that makes cached answers unreachable when what a
tenant's members may see changes."""
