"""Patient-level models.

- ``classifiers``: the tabular pipelines (SVM, MLP, XGBoost, logistic regression) with their
  imbalance handling.
- ``mil``: learned pooling over cached instance features (gated attention, top-k).
- ``cellcnn``: a small CNN trained from pixels as attention-MIL.
- ``fusion``: late fusion of a clinical expert and image experts over patient records.

This module imports no torch, scikit-learn or xgboost: the names below are cheap to list.
"""

CLASSIFIERS = ("svm", "mlp", "xgboost", "logreg")
IMBALANCE = ("none", "weights", "smote")
#: How an image expert turns a patient's cells into evidence: a fixed pooling followed by a
#: tabular classifier, learned attention or top-k pooling over instance features, or the
#: cell CNN from pixels. Several, joined by "+", are several experts (late fusion).
IMAGE_MODELS = ("pooled", "attention", "topk", "cellcnn")
#: Classifiers of the pooled image expert: the CLASSIFIERS, or "logregcv", a logistic
#: regression whose L2 strength is chosen by inner 3-fold CV on the training patients (an
#: image expert has hundreds of columns for ~73 patients: unregularised, it is overconfident
#: and dominates a late average).
IMAGE_CLASSIFIERS = (*CLASSIFIERS, "logregcv")
FUSIONS = ("early", "late")
#: How late fusion combines its experts: "mean" of probabilities, "logit": mean of log-odds
#: (a logarithmic opinion pool: an expert sure of its call is not diluted by an unsure one), or
#: "stacked": a logistic regression on the experts' inner out-of-fold log-odds.
COMBINES = ("mean", "logit", "stacked")
COMBINE_NAMES = {"mean": "mean of probabilities", "logit": "mean of log-odds", "stacked": "stacked logistic regression"}
