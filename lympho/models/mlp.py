"""The MLP classifier in torch, apart from the other classifiers so that using those (and
listing the names) never imports torch. Built by :func:`lympho.models.classifiers.make_pipeline`.
"""

from contextlib import contextmanager
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.validation import check_is_fitted, validate_data

from lympho.models.base import BinaryClassifier, balanced_weights, encode_binary_target


@contextmanager
def _torch_threads(n_threads):
    """Temporarily limit torch's intra-op threads; tiny matmuls run faster on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _MLP(torch.nn.Module):
    """ReLU multilayer perceptron with one output logit.

    Initialisation and dropout masks draw from an explicit generator, so the
    global torch RNG is neither used nor advanced.
    """

    def __init__(self, n_features, hidden_layer_sizes, dropout, generator):
        super().__init__()
        sizes = (n_features, *hidden_layer_sizes, 1)
        self.layers = torch.nn.ModuleList(
            torch.nn.utils.skip_init(torch.nn.Linear, n_in, n_out) for n_in, n_out in pairwise(sizes)
        )
        self.dropout = dropout
        for layer in self.layers:  # PyTorch's default Linear init, seeded locally
            bound = layer.in_features**-0.5
            torch.nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
            torch.nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    @classmethod
    def from_arrays(cls, arrays: dict, dropout: float) -> "_MLP":
        """The network whose ``state_dict`` is ``arrays`` (numpy), in eval mode."""
        weights = [arrays[f"layers.{i}.weight"] for i in range(len(arrays) // 2)]
        hidden = tuple(w.shape[0] for w in weights[:-1])
        network = cls(weights[0].shape[1], hidden, dropout, torch.Generator())
        network.load_state_dict({name: torch.from_numpy(np.array(value, dtype=np.float32))
                                 for name, value in arrays.items()})
        return network.eval()

    def forward(self, x, generator=None):
        """Logits for ``x``; dropout is applied only when a generator is given (training)."""
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
            if generator is not None and self.dropout > 0:
                keep = torch.rand(x.shape, generator=generator) >= self.dropout
                x = x * keep / (1.0 - self.dropout)
        return self.layers[-1](x).squeeze(-1)


class TorchMLPClassifier(BinaryClassifier):
    """Binary MLP classifier in torch with a scikit-learn interface.

    Trained with Adam on a (sample-weighted) binary cross-entropy over logits.
    ``class_weight="balanced"`` weights each sample by n / (2 * n_c) so both
    classes contribute equally to the loss. Minibatches are built by indexing
    float32 tensors and fitting runs on a single torch thread: on ~100 rows
    this is far faster than a DataLoader or multi-threaded matmuls.
    """

    def __init__(
        self,
        hidden_layer_sizes=(64,),
        learning_rate=1e-3,
        batch_size=8,
        epochs=100,
        weight_decay=0.0,
        dropout=0.0,
        class_weight=None,
        random_state=0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.class_weight = class_weight
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        """Train from scratch on ``X``, ``y``; returns self."""
        X, y = validate_data(self, X, y, dtype=np.float32)
        y_index = encode_binary_target(self, y)
        weights = balanced_weights(self.class_weight, y_index, sample_weight)
        generator = torch.Generator().manual_seed(self.random_state)
        with _torch_threads(1):
            self.model_ = _MLP(X.shape[1], tuple(self.hidden_layer_sizes), self.dropout, generator)
            self._train(
                torch.tensor(X),
                torch.tensor(y_index, dtype=torch.float32),
                torch.tensor(weights, dtype=torch.float32),
                generator,
            )
        return self

    def _train(self, X, y, weights, generator):
        """Run ``epochs`` passes of shuffled minibatch Adam updates."""
        optimizer = torch.optim.Adam(
            self.model_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay, fused=True
        )
        self.model_.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(X), generator=generator)
            for batch in torch.split(order, self.batch_size):
                logits = self.model_(X[batch], generator)
                loss = F.binary_cross_entropy_with_logits(logits, y[batch], weight=weights[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        self.model_.eval()

    def __getstate__(self):
        """Plain types only, for the safe model format: the network as its weight arrays."""
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself
        if "model_" in state:
            state["model_"] = {name: value.detach().cpu().numpy() for name, value in self.model_.state_dict().items()}
        return state

    def __setstate__(self, state):
        state = dict(state)
        if isinstance(state.get("model_"), dict):
            state["model_"] = _MLP.from_arrays(state["model_"], state["dropout"])
        super().__setstate__(state)

    def decision_function(self, X):
        """Logit of the positive class (``classes_[1]``)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        with _torch_threads(1), torch.no_grad():
            return self.model_(torch.tensor(X)).double().numpy()

    def predict_proba(self, X):
        """Probabilities for ``classes_``, shape (n_samples, 2)."""
        positive = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - positive, positive])
