"""Integration tests: skillgraft as a service against a real Prefect server (and a real browser)."""
