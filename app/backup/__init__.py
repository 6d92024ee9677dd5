"""Online backups, restores into an empty target, and the tombstones that keep purges and
erasures done after a backup done after restoring it."""
