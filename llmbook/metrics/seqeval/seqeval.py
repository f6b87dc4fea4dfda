"""Entity-level precision, recall and F1 for BIO-tagged sequences (local evaluate module).

An entity counts as correct only when its type and its exact span match
(CoNLL evaluation, as the ``seqeval`` package implements it).
"""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report

_DESCRIPTION = "Entity-level scores of sequence labelling with seqeval (Nakayama 2018)."
_KWARGS = """
Args:
    predictions (list of list of str): predicted tags per sentence, e.g. [["O", "B-person"]].
    references (list of list of str): gold tags per sentence.
    mode (str): None (CoNLL, default) or 'strict'; scheme (str): e.g. 'IOB2' with mode='strict'.
    zero_division: value when a ratio has a zero denominator. Default 0.
Returns:
    one dict per entity type {precision, recall, f1, number}, and overall_precision,
    overall_recall, overall_f1 (micro averages) and overall_accuracy (token level, counts 'O').
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                "references": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
            }),
        )

    def _compute(self, predictions, references, suffix=False, scheme=None, mode=None,
                 sample_weight=None, zero_division=0):
        for i, (p, r) in enumerate(zip(predictions, references, strict=True)):
            if len(p) != len(r):
                raise ValueError(f"sentence {i}: {len(p)} predicted tags but {len(r)} gold tags")
        if scheme is not None:
            import importlib
            scheme = getattr(importlib.import_module("seqeval.scheme"), scheme)
        report = classification_report(y_true=references, y_pred=predictions, suffix=suffix,
                                       output_dict=True, scheme=scheme, mode=mode,
                                       sample_weight=sample_weight, zero_division=zero_division)
        report.pop("macro avg")
        report.pop("weighted avg")
        overall = report.pop("micro avg")
        scores = {t: {"precision": float(s["precision"]), "recall": float(s["recall"]),
                      "f1": float(s["f1-score"]), "number": int(s["support"])} for t, s in report.items()}
        scores.update(overall_precision=float(overall["precision"]), overall_recall=float(overall["recall"]),
                      overall_f1=float(overall["f1-score"]),
                      overall_accuracy=float(accuracy_score(y_true=references, y_pred=predictions)))
        return scores
