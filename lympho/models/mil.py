"""Learned multiple-instance pooling over cached instance features, fitted inside each fold.

A patient is a bag of cells and only the bag has a label. Instead of a fixed pooling
(mean, moments) followed by a tabular classifier, these estimators learn how to weigh the
cells, end to end, on the training patients only:

- :class:`AttentionMILClassifier`: gated attention (Ilse, Tomczak and Welling, 2018): each
  cell's embedding gets a weight ``softmax(w . (tanh(V h) * sigmoid(U h)))``; the patient's
  embedding is the weighted sum, and a linear head gives the logit. The weights say which
  cells the model looked at.
- :class:`TopKMILClassifier`: each cell gets its own logit; the patient's logit is the
  mean of its ``k`` highest (a few abnormal cells can decide). A cell's score is its
  probability.

Both take ``X`` as a sequence of bags (an ``(n_cells, n_features)`` array per patient),
standardise instances with the training cells' statistics, train with AdamW on a
class-weighted binary cross-entropy for a fixed number of epochs or, with
``validation_fraction > 0``, stop early on an inner validation split of the training
patients (never on the fold being evaluated). On the 110 real patients (2 x 3-fold CV,
morphology features) fixed epochs did better: with ~15 validation patients the stopping
epoch is noise (1 to 34), so the defaults train a fixed number of epochs. Seeded and deterministic on one
machine. The fitted network is kept as numpy arrays (``network_``), so the estimator's
state is plain types for the safe model format.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.utils.validation import check_is_fitted
from torch import nn

from lympho.models.base import BinaryClassifier, encode_binary_target
from lympho.models.mlp import _torch_threads


class GatedAttention(nn.Module):
    """Attention weights over the instances of each bag (Ilse et al. 2018, gated variant)."""

    def __init__(self, dim: int, attention_dim: int):
        super().__init__()
        self.V, self.U, self.w = nn.Linear(dim, attention_dim), nn.Linear(dim, attention_dim), nn.Linear(attention_dim, 1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``h`` (bags, instances, dim), ``mask`` (bags, instances) -> weights summing to 1 per bag."""
        scores = self.w(torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))).squeeze(-1)
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)


class _BagNet(nn.Module):
    """Instance embedding, then attention or top-k pooling, then one logit per bag."""

    def __init__(self, n_features: int, hidden: int, attention_dim: int, dropout: float, pooling: str, k: int):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.pooling, self.k = pooling, k
        self.attention = GatedAttention(hidden, attention_dim) if pooling == "attention" else None
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bag logits (bags,) and per-instance weights (bags, instances): attention weights,
        or (top-k) each instance's probability."""
        h = self.embed(x)
        if self.attention is not None:
            weights = self.attention(h, mask)
            return self.head((weights.unsqueeze(-1) * h).sum(1)).squeeze(-1), weights
        scores = self.head(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        top = scores.sort(dim=1, descending=True).values
        k = torch.clamp(mask.sum(1, keepdim=True), max=self.k)
        keep = torch.arange(top.shape[1]).unsqueeze(0) < k
        logits = torch.where(keep, top, torch.zeros_like(top)).sum(1) / k.squeeze(1)
        return logits, torch.sigmoid(scores)


def pad_bags(bags, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Bags of different sizes as one zero-padded (bags, max instances, features) tensor and
    its boolean mask of real instances."""
    longest = max(len(bag) for bag in bags)
    x = torch.zeros((len(bags), longest, bags[0].shape[1]), dtype=dtype)
    mask = torch.zeros((len(bags), longest), dtype=torch.bool)
    for i, bag in enumerate(bags):
        x[i, :len(bag)] = torch.as_tensor(bag, dtype=dtype)
        mask[i, :len(bag)] = True
    return x, mask


def inner_split(y: np.ndarray, fraction: float, random_state: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Training and early-stopping indices of the training patients; no validation part when
    ``fraction`` is 0 or a class has too few patients to spare one."""
    n_valid = int(round(fraction * len(y)))
    if fraction <= 0 or n_valid < 2 or np.bincount(y, minlength=2).min() < 4:
        return np.arange(len(y)), None
    split = StratifiedShuffleSplit(n_splits=1, test_size=n_valid, random_state=random_state)
    train, valid = next(split.split(np.zeros(len(y)), y))
    return np.sort(train), np.sort(valid)


def class_weights(y: np.ndarray, class_weight) -> np.ndarray:
    """Per-class weights n / (2 n_c) for "balanced", ones otherwise."""
    if class_weight is None:
        return np.ones(2)
    counts = np.bincount(y, minlength=2).astype(float)
    return len(y) / (2 * np.maximum(counts, 1))


@contextmanager
def seeded(seed: int):
    """Torch's global RNG (dropout, initialisation) seeded for the block and restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def network_arrays(network: nn.Module) -> dict:
    """A network's ``state_dict`` as numpy arrays (plain types)."""
    return {name: value.detach().float().cpu().numpy().copy() for name, value in network.state_dict().items()}


def load_arrays(network: nn.Module, arrays: dict) -> nn.Module:
    network.load_state_dict({name: torch.from_numpy(np.asarray(value, dtype=np.float32)) for name, value in arrays.items()})
    return network.eval()


class _MILClassifier(BinaryClassifier):
    """Shared fit / predict of the bag classifiers; subclasses fix the pooling."""

    pooling = "attention"

    def _network(self, n_features: int) -> _BagNet:
        return _BagNet(n_features, self.hidden, getattr(self, "attention_dim", 1), self.dropout, self.pooling,
                       getattr(self, "k", 1))

    def _bags(self, X) -> list[np.ndarray]:
        bags = [np.asarray(bag, dtype=np.float32) for bag in X]
        if not bags or any(bag.ndim != 2 or len(bag) == 0 for bag in bags):
            raise ValueError("X must be a non-empty sequence of non-empty (n_instances, n_features) bags")
        return bags

    def _standardise(self, bags: list[np.ndarray]) -> list[np.ndarray]:
        return [np.clip((bag - self.mean_) / self.scale_, -self.clip, self.clip) for bag in bags]

    def fit(self, X, y):
        """Train on bags ``X`` with bag labels ``y``; returns self."""
        bags = self._bags(X)
        y_index = encode_binary_target(self, np.asarray(y))
        stacked = np.concatenate(bags)
        self.n_features_in_ = stacked.shape[1]
        self.mean_, std = stacked.mean(0), stacked.std(0)
        self.scale_ = np.where(std > 1e-8, std, 1.0)
        bags = self._standardise(bags)
        train, valid = inner_split(y_index, self.validation_fraction, self.random_state)
        with seeded(self.random_state), _torch_threads(1):
            network = self._network(self.n_features_in_)
            self.n_epochs_ = self._train(network, bags, y_index, train, valid)
        self.network_ = network_arrays(network)
        return self

    def _loss(self, network, bags, y, weights) -> torch.Tensor:
        x, mask = pad_bags(bags)
        logits, _ = network(x, mask)
        target = torch.as_tensor(y, dtype=torch.float32)
        return F.binary_cross_entropy_with_logits(logits, target, weight=torch.as_tensor(weights[y], dtype=torch.float32))

    def _train(self, network, bags, y, train, valid) -> int:
        """AdamW epochs over shuffled minibatches of training bags; with a validation part,
        the weights of the epoch with the lowest validation loss are kept. Returns that epoch."""
        weights = class_weights(y[train], self.class_weight)
        optimizer = torch.optim.AdamW(network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        generator = np.random.default_rng(self.random_state)
        best, best_loss, best_epoch, waited = network_arrays(network), np.inf, self.epochs, 0
        for epoch in range(1, self.epochs + 1):
            network.train()
            order = generator.permutation(train)
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                loss = self._loss(network, [bags[i] for i in batch], y[batch], weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if valid is None:
                continue
            network.eval()
            with torch.no_grad():
                loss = float(self._loss(network, [bags[i] for i in valid], y[valid], weights))
            if loss < best_loss - 1e-4:
                best, best_loss, best_epoch, waited = network_arrays(network), loss, epoch, 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        if valid is not None:
            load_arrays(network, best)
        network.eval()
        return best_epoch

    def _forward(self, X) -> tuple[np.ndarray, list[np.ndarray]]:
        check_is_fitted(self, "network_")
        bags = self._standardise(self._bags(X))
        if bags[0].shape[1] != self.n_features_in_:
            raise ValueError(f"bags have {bags[0].shape[1]} features, the model was fitted on {self.n_features_in_}")
        network = load_arrays(self._network(self.n_features_in_), self.network_)
        logits, weights = [], []
        with _torch_threads(1), torch.no_grad():
            for start in range(0, len(bags), 32):
                chunk = bags[start:start + 32]
                x, mask = pad_bags(chunk)
                chunk_logits, chunk_weights = network(x, mask)
                logits.append(chunk_logits.double().numpy())
                weights += [w[:len(bag)].double().numpy() for w, bag in zip(chunk_weights, chunk)]
        return np.concatenate(logits), weights

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities for ``classes_``, shape (n_bags, 2)."""
        positive = 1 / (1 + np.exp(-self._forward(X)[0]))
        return np.column_stack([1 - positive, positive])

    def instance_weights(self, X) -> list[np.ndarray]:
        """Per bag, one weight per instance: the attention weight (sums to 1 over the bag)
        or, for top-k, the instance's own probability of malignancy."""
        return self._forward(X)[1]


class AttentionMILClassifier(_MILClassifier):
    """Gated-attention MIL over instance features (see the module docstring)."""

    pooling = "attention"

    def __init__(self, hidden=32, attention_dim=16, dropout=0.5, epochs=60, batch_size=8, learning_rate=1e-3,
                 weight_decay=0.1, validation_fraction=0.0, patience=15, clip=5.0, class_weight="balanced",
                 random_state=0):
        self.hidden, self.attention_dim, self.dropout = hidden, attention_dim, dropout
        self.epochs, self.batch_size, self.learning_rate, self.weight_decay = epochs, batch_size, learning_rate, weight_decay
        self.validation_fraction, self.patience, self.clip = validation_fraction, patience, clip
        self.class_weight, self.random_state = class_weight, random_state


class TopKMILClassifier(_MILClassifier):
    """Top-k instance pooling over instance features (see the module docstring)."""

    pooling = "topk"

    def __init__(self, k=8, hidden=32, dropout=0.25, epochs=30, batch_size=8, learning_rate=1e-3,
                 weight_decay=1e-2, validation_fraction=0.0, patience=15, clip=5.0, class_weight="balanced",
                 random_state=0):
        self.k, self.hidden, self.dropout = k, hidden, dropout
        self.epochs, self.batch_size, self.learning_rate, self.weight_decay = epochs, batch_size, learning_rate, weight_decay
        self.validation_fraction, self.patience, self.clip = validation_fraction, patience, clip
        self.class_weight, self.random_state = class_weight, random_state
