"""Password recovery: a reset link by email, and the reset it allows."""
