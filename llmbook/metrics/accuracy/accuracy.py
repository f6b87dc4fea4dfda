"""Accuracy: the fraction of predictions equal to the references (local evaluate module)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy = (number of correct predictions) / (number of predictions)."
_KWARGS = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    normalize (bool): if False, return the number of correct predictions. Default True.
    sample_weight (list of float): optional weights.
Returns:
    accuracy (float)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int32"),
                                        "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(f"{predictions.shape[0]} predictions but {references.shape[0]} references")
        correct = (predictions == references).astype(float)
        if sample_weight is not None:
            correct = correct * np.asarray(sample_weight, dtype=float)
            total = float(np.sum(sample_weight))
        else:
            total = float(len(correct))
        return {"accuracy": float(correct.sum() / total) if normalize else float(correct.sum())}
