"""Prefect flows: retrain (the DAG)."""
