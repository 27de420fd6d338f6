"""Patient-level models.

- ``classifiers``: the tabular pipelines (SVM, MLP, XGBoost, logistic regression) with their
  imbalance handling.

This module imports no torch, scikit-learn or xgboost: the names below are cheap to list.
"""

CLASSIFIERS = ("svm", "mlp", "xgboost", "logreg")
IMBALANCE = ("none", "weights", "smote")
