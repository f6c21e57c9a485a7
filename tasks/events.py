"""Event names and resource ids: part of skillgraft's public interface (automations and triggers match on them)."""

DATA_ARRIVED = "skillgraft.data.arrived"
DATA_REJECTED = "skillgraft.data.rejected"
CANDIDATE_TRAINED = "skillgraft.candidate.trained"
MODEL_PROMOTED = "skillgraft.model.promoted"
MODEL_REJECTED = "skillgraft.model.rejected"
MODEL_ROLLED_BACK = "skillgraft.model.rolled-back"


def model_resource(model: str) -> dict[str, str]:
    return {"prefect.resource.id": f"skillgraft.model.{model}", "prefect.resource.name": model}


def artifact_key(model: str, what: str) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    safe = "".join(c if c.isalnum() else "-" for c in model.lower())
    return f"{safe}-{what}"
