"""Idempotency: retried creates that take effect once and answer the same each time."""
