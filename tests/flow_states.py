"""What the UI's run list shows for each retrain outcome: the final state's name, written out here as the spec
(not derived from flows.retrain.state_name), and the check that the API has it."""

from __future__ import annotations

from prefect.client.orchestration import get_client

STATE_NAMES = {
    "promoted": "Promoted",
    "rejected": "Rejected",
    "rolled-back": "RolledBack",
    "superseded": "Superseded",
    "check-failed": "CheckFailed",
    "no-new-data": "NoNewData",
    "data-rejected": "DataRejected",
}


def assert_named_after_outcome(state, outcome) -> None:
    """The flow run's final state, as the API returns it, is named after the outcome's status."""
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(state.state_details.flow_run_id).state.name
    assert name == STATE_NAMES[outcome.status], (name, outcome.status)
