"""First-word match: the prediction's first word equals the reference, for one-word answers from models that go on
talking ("Paris. It is the capital of..." answers "Paris").

A prediction's first word is its first whitespace-separated token with leading and trailing punctuation removed;
the reference is compared the same way, case-sensitively. Shipped with skillgraft as a local `evaluate` metric module
(works offline). Load it with ``skillgraft.evaluate.load_metric("first_word")``.
"""

import string

import datasets
import evaluate

_DESCRIPTION = "Fraction of predictions whose first word (punctuation stripped) equals the reference's first word."
_KWARGS = """
Args:
    predictions (list of str): model outputs.
    references (list of str): expected answers (one word each; only the first word is compared).
Returns:
    first_word (float): mean of per-example matches, in [0, 1].
    matches (list of int): 1 where the first words are equal, else 0 (same order as the inputs).
"""

_STRIP = string.punctuation + "\u2018\u2019\u201c\u201d\u00ab\u00bb\u00bf\u00a1\u2026"


def first_word(text: str) -> str:
    for word in text.split():
        word = word.strip(_STRIP)
        if word:
            return word
    return ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class FirstWord(evaluate.Metric):
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
        matches = [int(bool(first_word(r)) and first_word(p) == first_word(r)) for p, r in zip(predictions, references)]
        return {"first_word": sum(matches) / len(matches) if matches else 0.0, "matches": matches}
