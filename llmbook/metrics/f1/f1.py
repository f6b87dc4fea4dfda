"""F1 score via scikit-learn (local evaluate module)."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall), computed by sklearn.metrics.f1_score."
_KWARGS = """
Args:
    predictions (list of int), references (list of int)
    labels (list of int): labels to include (multiclass averages).
    pos_label (int): the positive class for average='binary'. Default 1.
    average (str): 'binary' (default), 'micro', 'macro', 'weighted' or None (per class).
    sample_weight (list of float): optional weights.
Returns:
    f1 (float, or array of floats when average=None)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int32"),
                                        "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary",
                 sample_weight=None):
        score = f1_score(references, predictions, labels=labels, pos_label=pos_label,
                         average=average, sample_weight=sample_weight)
        return {"f1": score if getattr(score, "size", 1) > 1 else float(score)}
