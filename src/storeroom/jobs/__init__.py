"""Background jobs: rows that say what is running, and the Celery tasks that run them."""
