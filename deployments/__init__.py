"""Deployments of the skillgraft flows: serve.py (a served process), prefect.yaml (work pools)."""
