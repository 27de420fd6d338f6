"""Patient-level models: ``classifiers`` holds the tabular pipelines (SVM, MLP, XGBoost,
logistic regression) with their imbalance handling.
"""
