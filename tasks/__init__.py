"""Prefect tasks: thin wrappers over skillgraft's core steps, adding retries, artifacts and events."""
