"""Exact match of a prediction and its reference after trimming and collapsing whitespace.

Shipped with skillgraft as a local `evaluate` metric module, so scoring works offline (``evaluate.load`` of a hub name
needs the network). Load it with ``skillgraft.evaluate.load_metric("exact_match")``.
"""

import datasets
import evaluate

_DESCRIPTION = "Fraction of predictions equal to their reference after whitespace normalisation (strip, collapse)."
_KWARGS = """
Args:
    predictions (list of str): model outputs.
    references (list of str): expected answers.
Returns:
    exact_match (float): mean of per-example matches, in [0, 1].
    matches (list of int): 1 where the prediction matches its reference, else 0 (same order as the inputs).
"""


def _norm(text: str) -> str:
    return " ".join(text.split())


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        matches = [int(_norm(p) == _norm(r)) for p, r in zip(predictions, references)]
        return {"exact_match": sum(matches) / len(matches) if matches else 0.0, "matches": matches}
