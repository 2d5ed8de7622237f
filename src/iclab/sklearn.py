"""scikit-learn estimators over a pretrained iclab model: `fit` stores the table, `predict` runs it in context.

    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import cross_val_score
    from iclab.sklearn import ICLRegressor

    cross_val_score(ICLRegressor(), *load_diabetes(return_X_y=True))

No weights change: each test row becomes the query of one prompt whose examples are training rows, and the model's
prediction at the query is the estimate (TabPFN's recipe, with any iclab run as the model). A model takes `d`
features and at most `points` examples per prompt (its config); a table is fitted to that shape per ensemble
member, each member with its own random draws, and the members' predictions are averaged. The features are first
standardised and whitened (`whiten_x`: uncorrelated, unit variance on the training rows), since the models are
trained on isotropic Gaussian inputs and a real table's columns are correlated. Then:

- a table **wider** than d: `wide="projection"` maps the p whitened features to d by a Gaussian random
  projection (entries N(0, 1/p), so the inputs keep unit variance, as the model's isotropic training inputs have);
  `wide="subset"` keeps d randomly chosen features;
- a table **narrower** than d: its features, in a random order, then zeros in the remaining inputs (as Garg et al.'s
  curriculum pads the dimensions it has not reached);
- **more training rows** than the context (`context_size`, default points - 1): a random subsample of rows per
  member; fewer: all of them, in a random order.

The draws are made in `fit` from `random_state`, so a fitted estimator predicts each row the same way whatever else
is in the batch. `predict` runs every test row at once: for iclab's transformer (softmax or linear attention) each
member's context is run once and every test row, as its query token, attends to it (the numbers of the whole
prompts, with about 2c + 2 times fewer tokens per row); any other model runs the whole prompts, batched. Needs
scikit-learn (`pip install iclab[baselines]`).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:  # pragma: no cover - the extra is part of the dev install
    raise UserError("iclab.sklearn needs scikit-learn: pip install iclab[baselines]") from None

__all__ = ["DEFAULT_MODEL", "ICLClassifier", "ICLRegressor", "resolve_model"]

# The shipped model ICLRegressor uses unless told otherwise: iclab's model made for tables (d = 10, 128 rows of
# context, a prior of noisy linear, ReLU-net, sparse and tree functions: `iclab reproduce tabular`), which has the
# best cross-validated R^2 on the diabetes table of the shipped models.
DEFAULT_MODEL = "tabular"
MAX_PROMPTS = 8192  # prompts per forward pass: bounds the memory of a large test set
WIDE = ("projection", "subset")
# The estimators' poor_score tag: a prompt holds at most points - 1 training rows (128 for the default model, 10
# for the other shipped ones, 4 in the test suite's checks), so scikit-learn's accuracy bars on its 100-200-row
# check datasets (R^2 > 0.5, accuracy > 0.83) are not theirs.
POOR_SCORE = True


def resolve_model(model: str | Path) -> Path:
    """The run folder of `model`: a run folder's path, or the name of a model shipped in iclab/pretrained/."""
    from .recipes.models import pretrained_dir
    from .spec import unknown_key_error

    if (Path(model) / "config.json").is_file():
        return Path(model)
    shipped = pretrained_dir("")
    if (shipped / str(model) / "config.json").is_file():
        return shipped / str(model)
    names = sorted(p.name for p in shipped.iterdir() if (p / "config.json").is_file())
    if isinstance(model, str) and "/" not in model:
        raise unknown_key_error(model, names, "model (a run folder or a shipped model name)")
    raise UserError(f"model {str(model)!r} is not a run folder (no config.json); train one with iclab train")


@functools.lru_cache(maxsize=8)
def _load(path: str, device: str, dtype: str, metric: str) -> tuple[torch.nn.Module, int, int]:
    """(model in eval mode, its d, its points) of a run folder trained on a task scored by `metric`; cached, as
    cross-validation refits often."""
    from .tasks import make_task
    from .training.runs import load_model, read_config

    try:
        config = read_config(Path(path))
        task = make_task(config.task, config.dims)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"{path} holds no iclab in-context model (iclab train makes one)") from None
    if task.metric != metric:
        kind = "regression" if metric == "squared" else "classification (linear_classification)"
        raise UserError(f"{path} was trained on '{config.task['name']}', not on {kind}; pick a model trained on it")
    threads = torch.get_num_threads()
    try:
        model, _ = load_model(Path(path), config)
    finally:  # the run's `threads` is how it trained; the caller's setting stands for prediction
        torch.set_num_threads(threads)
    try:
        model = model.to(torch.device(device), getattr(torch, dtype))
    except (RuntimeError, AttributeError, TypeError):
        raise UserError(f"device {device!r} / dtype {dtype!r}: not a usable torch device and float dtype") from None
    return model, config.dims, config.points


class _ICLEstimator(BaseEstimator):
    """What the regressor and the classifier share: the fitted draws and the batched forward pass."""

    _metric = "squared"  # the model's task metric: "squared" (regression) or "sign" (classification)

    def _fit_context(self, X: np.ndarray, targets: np.ndarray) -> None:
        """Draw each member's feature map and context rows; store the members' contexts. `targets` (n, T) are
        the context's y values, one set per output (T = 1 for regression, one per class for one-vs-rest)."""
        if not isinstance(self.n_estimators, int) or self.n_estimators < 1:
            raise ValueError(f"n_estimators must be an integer >= 1, got {self.n_estimators!r}")
        if self.wide not in WIDE:
            raise ValueError(f"wide must be one of {WIDE}, got {self.wide!r}")
        self.model_path_ = str(resolve_model(self.model))
        _, d, points = _load(self.model_path_, self.device, self.dtype, self._metric)
        size = points - 1 if self.context_size is None else self.context_size
        if not isinstance(size, int) or not 1 <= size <= points - 1:
            raise ValueError(f"context_size must be an integer from 1 to {points - 1} (the model's), got {size!r}")
        rng = check_random_state(self.random_state)
        n, p = X.shape
        self.x_mean_ = X.mean(0) if self.standardize_x or self.whiten_x else np.zeros(p)
        self.x_scale_ = _scale(X.std(0)) if self.standardize_x else np.ones(p)
        self.x_whitening_ = _whitening((X - self.x_mean_) / self.x_scale_) if self.whiten_x else np.eye(p)
        maps = np.stack([_feature_map(p, d, self.wide, rng) for _ in range(self.n_estimators)])  # (E, p, d)
        rows = np.stack([rng.permutation(n)[:size] for _ in range(self.n_estimators)])  # (E, c)
        self.feature_maps_ = maps
        self.context_rows_ = rows
        z = self._inputs(X)
        self.context_x_ = z[np.arange(self.n_estimators)[:, None], rows]  # (E, c, d)
        self.context_y_ = self._tensor(targets[rows])  # (E, c, T)

    def _inputs(self, X: np.ndarray) -> torch.Tensor:
        """Each member's model inputs for the rows of X: standardised, whitened, mapped to d features (E, n, d)."""
        white = ((X - self.x_mean_) / self.x_scale_) @ self.x_whitening_
        return self._tensor(np.einsum("np,epd->end", white, self.feature_maps_))

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=getattr(torch, self.dtype), device=self.device)

    def _outputs(self, X: np.ndarray) -> np.ndarray:
        """The model's prediction at each test row as the query, averaged over the members: (m, T). Each (member,
        output) context is run once; the test rows are its queries, in batches of at most MAX_PROMPTS."""
        net = _load(self.model_path_, self.device, self.dtype, self._metric)[0]
        (E, c, d), T = self.context_x_.shape, self.context_y_.shape[-1]
        cx = self.context_x_[:, None].expand(E, T, c, d).reshape(E * T, c, d)
        cy = self.context_y_.permute(0, 2, 1).reshape(E * T, c)
        z = self._inputs(X)
        chunk = max(1, MAX_PROMPTS // (E * T))
        out = []
        with torch.inference_mode():
            run = net.query_predictor(cx, cy)  # each context computed once where the architecture can
            for start in range(0, len(X), chunk):
                q = z[:, start : start + chunk]  # (E, m, d)
                m = q.shape[1]
                pred = run(q[:, None].expand(E, T, m, d).reshape(E * T, m, d)).reshape(E, T, m)
                out.append(pred.mean(0).T.double().cpu().numpy())
        return np.concatenate(out)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None  # the draws come from random_state
        return tags


def _scale(std: np.ndarray) -> np.ndarray:
    return np.where(std > 0, std, 1.0)


def _whitening(Z: np.ndarray) -> np.ndarray:
    """The symmetric (p, p) matrix C^(-1/2) of the centred rows' covariance C, so that Z @ it has identity
    covariance on these rows: uncorrelated unit-variance inputs, as the models' isotropic training inputs are. It is
    the whitening that moves each feature least (ZCA), so a feature subset or a narrow table keeps its columns'
    meaning. Directions without variance (a constant or duplicated column, fewer rows than features) map to 0."""
    values, vectors = np.linalg.eigh(Z.T @ Z / len(Z))
    keep = values > max(values.max(), 0.0) * 1e-10
    inverse_root = np.where(keep, 1.0 / np.sqrt(np.where(keep, values, 1.0)), 0.0)
    return (vectors * inverse_root) @ vectors.T


def _feature_map(p: int, d: int, wide: str, rng: np.random.RandomState) -> np.ndarray:
    """A (p, d) matrix taking a row's p features to the model's d inputs (see the module's docstring)."""
    if p > d and wide == "projection":
        return rng.normal(0.0, 1.0 / math.sqrt(p), size=(p, d))
    order = rng.permutation(p)[:d]  # a random order; for p > d a random subset of d features
    out = np.zeros((p, d))
    out[order, np.arange(len(order))] = 1.0
    return out


class ICLRegressor(RegressorMixin, _ICLEstimator):
    """In-context regression with a pretrained iclab model (see the module's docstring for the shapes it takes).

    Parameters: `model` a run folder or a shipped model's name; `n_estimators` ensemble members (each with its own
    feature map and context rows, predictions averaged); `context_size` training rows per prompt (default: the
    model's points - 1); `wide` how a table wider than the model's d is reduced ("projection" or "subset");
    `standardize_x`, `standardize_y` centre and scale by the training rows (undone on the output: predictions are
    in y's units); `whiten_x` then decorrelates the features (identity covariance on the training rows, as the
    model's isotropic training inputs have); `device`, `dtype` where the model runs; `random_state` the draws.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        n_estimators: int = 32,
        context_size: int | None = None,
        wide: str = "projection",
        standardize_x: bool = True,
        whiten_x: bool = True,
        standardize_y: bool = True,
        device: str = "cpu",
        dtype: str = "float32",
        random_state: int | np.random.RandomState | None = None,
    ):
        self.model, self.n_estimators, self.context_size, self.wide = model, n_estimators, context_size, wide
        self.standardize_x, self.whiten_x, self.standardize_y = standardize_x, whiten_x, standardize_y
        self.device, self.dtype, self.random_state = device, dtype, random_state

    def fit(self, X, y) -> ICLRegressor:
        """Validate and store the training rows (and draw the ensemble's feature maps and context rows)."""
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        self.y_mean_ = float(y.mean()) if self.standardize_y else 0.0
        self.y_scale_ = float(_scale(y.std())) if self.standardize_y else 1.0
        self._fit_context(X, ((y - self.y_mean_) / self.y_scale_)[:, None])
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = POOR_SCORE
        return tags

    def predict(self, X) -> np.ndarray:
        """Predictions (m,) in y's units, all rows at once."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.y_mean_ + self.y_scale_ * self._outputs(X)[:, 0]


class ICLClassifier(ClassifierMixin, _ICLEstimator):
    """In-context classification with an iclab model trained on `linear_classification` (labels ±1): two classes
    are the model's -1 and +1; more are one-vs-rest (each class +1 against the rest, the highest score wins).
    `decision_function` is the ensemble's mean output, `predict_proba` its sigmoid (the model's probability when
    it was trained with the logistic loss; normalised over the classes for more than two). No classification model
    ships: pass `model` the folder of one, e.g. `iclab train demo --set task.name=linear_classification`. The
    other parameters are ICLRegressor's."""

    _metric = "sign"

    def __init__(
        self,
        model: str | None = None,
        n_estimators: int = 32,
        context_size: int | None = None,
        wide: str = "projection",
        standardize_x: bool = True,
        whiten_x: bool = True,
        device: str = "cpu",
        dtype: str = "float32",
        random_state: int | np.random.RandomState | None = None,
    ):
        self.model, self.n_estimators, self.context_size, self.wide = model, n_estimators, context_size, wide
        self.standardize_x, self.whiten_x = standardize_x, whiten_x
        self.device, self.dtype, self.random_state = device, dtype, random_state

    def fit(self, X, y) -> ICLClassifier:
        if self.model is None:
            raise UserError(
                "ICLClassifier needs model=RUN_DIR, a run trained on linear_classification (none ships), e.g. "
                "iclab train demo --set task.name=linear_classification --out runs/clf"
            )
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        signs = np.where(labels[:, None] == np.arange(len(self.classes_)), 1.0, -1.0)  # (n, classes)
        self._fit_context(X, signs[:, 1:] if len(self.classes_) == 2 else signs)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = POOR_SCORE
        return tags

    def decision_function(self, X) -> np.ndarray:
        """(m,) for two classes (positive: classes_[1]), else (m, classes)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        scores = self._outputs(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        if scores.ndim == 1:
            positive = 1 / (1 + np.exp(-scores))
            return np.stack([1 - positive, positive], axis=1)
        proba = 1 / (1 + np.exp(-scores))
        return proba / proba.sum(1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        if len(self.classes_) == 1:
            return np.full(len(scores), self.classes_[0])
        return self.classes_[(scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(1)]
