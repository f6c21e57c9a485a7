"""Deployments of the skillgraft flows, ``retrain/<model>`` and ``watch/<model>``, two ways (the same schedules,
trigger and concurrency limits):

- ``deployments/serve.py``: served from one process, its flow runs that process's subprocesses; no setup
  (``skillgraft server`` starts a Prefect server and runs it);
- ``deployments/prefect.yaml``: ``prefect deploy --all --prefect-file deployments/prefect.yaml`` onto a work pool
  made from a template in ``deployments/work-pools/`` (process, docker, kubernetes), whose workers run the flow runs.

docs/OPERATIONS.md, "Work pools and workers", compares them and has the commands.
"""
