"""Notifications: email delivery (outbox or SMTP) and the messages Storeroom sends."""
