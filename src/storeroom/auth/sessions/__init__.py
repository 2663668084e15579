"""Browser sessions: the cookie the web UI signs in with."""
