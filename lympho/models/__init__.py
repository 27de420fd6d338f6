"""Patient-level models: ``classifiers`` holds the tabular pipelines (SVM, MLP, XGBoost,
logistic regression) with their imbalance handling.
"""

# The names live here, free of scikit-learn and torch, so the CLI and the configuration
# can validate choices without importing the models themselves.
CLASSIFIERS = ("svm", "mlp", "xgboost", "logreg")
IMBALANCE = ("none", "weights", "smote")
