"""What an engine shows besides search: the autoencoder's views and the analytics of the UI.

Reconstructions and reconstruction errors (the autoencoder), drift since the learned models were
fitted, a 2-D map of each approach's embeddings, labels and leave-one-out evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from imgsim import approaches as approaches_mod
from imgsim.approaches.base import Drift
from imgsim.ingest.images import ImageSource, crop, to_square
from imgsim.loader import Loader
from imgsim.query import as_rgb


@dataclasses.dataclass
class Reconstruction:
    """The autoencoder's view of one image: input, output, per-pixel error, MSE and PSNR.

    ``plain`` and ``plain_psnr`` are the ``plain`` model's reconstruction and PSNR when one was
    trained beside a robust autoencoder (its ``plain_beside`` setting), else None.
    """

    original: np.ndarray
    reconstruction: np.ndarray
    error_map: np.ndarray
    mse: float
    psnr: float
    plain: np.ndarray | None = None
    plain_psnr: float | None = None


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (image * 255).round().astype(np.uint8)


class Views:
    """The autoencoder's views and the UI's analytics over a loaded catalogue.

    Args:
        loader: The engine's loader.
        product_box: Finds the automatic product box of a photo (see
            :meth:`imgsim.query.QueryPipeline.product_box`).
    """

    def __init__(self, loader: Loader,
                 product_box: Callable[[np.ndarray], tuple[int, int, int, int] | None]) -> None:
        self.loader = loader
        self.catalog = loader.catalog
        self.items = loader.items
        self.product_box = product_box
        self._errors: pd.DataFrame | None = None
        self._plain: Any = None
        self._plain_loaded = False

    def reconstruct(self, image: ImageSource | np.ndarray | None = None, *,
                    row: int | None = None, box: tuple[int, int, int, int] | None = None) -> Reconstruction:
        """The autoencoder's reconstruction of ``image`` or of catalogue item ``row``.

        A photo is cropped to ``box``, else to its automatic product box (as a search does), so
        the reconstruction is the studio picture the autoencoder imagines for the product.
        """
        model = self._reconstructor()
        if row is not None:
            square = self.catalog.load_square(row, model.image_size)
        else:
            rgb = as_rgb(image)
            product = box or self.product_box(rgb)
            square = to_square(crop(rgb, product) if product else rgb, model.image_size)
        recon, mse, psnr = model.errors(square[None])
        error = np.abs(recon[0] - square.astype(np.float32) / 255.0).mean(axis=2)
        plain = plain_psnr = None
        beside = self._plain_reconstructor()
        if beside is not None and beside.image_size == model.image_size:
            plain_recon, _, plain_psnrs = beside.errors(square[None])
            plain, plain_psnr = _to_uint8(plain_recon[0]), float(plain_psnrs[0])
        return Reconstruction(square, _to_uint8(recon[0]), error, float(mse[0]), float(psnr[0]), plain, plain_psnr)

    def reconstruction_errors(self, batch_size: int = 64) -> pd.DataFrame:
        """Per-item reconstruction MSE and PSNR over the whole catalogue (computed once per engine).

        Returns:
            A frame with ``row``, ``id``, ``name``, ``category``, ``mse``, ``psnr``.
        """
        from imgsim.approaches.autoencoder import psnr
        from imgsim.storage.stores import iter_batches

        model = self._reconstructor()
        with self.loader.lock:
            if self._errors is None:
                mse = np.concatenate([model.errors(batch)[1] for batch in
                                      iter_batches(self.catalog.thumb_paths(), model.image_size, batch_size)])
                self._errors = pd.DataFrame({
                    "row": np.arange(len(mse)), "id": self.items["id"], "name": self.items["name"],
                    "category": self.items["category"], "mse": mse, "psnr": psnr(mse)})
            return self._errors.copy()

    def _plain_reconstructor(self):
        """The ``plain`` model trained beside the searched one, loaded once; None without one."""
        with self.loader.lock:
            if not self._plain_loaded:
                approach = approaches_mod.get(approaches_mod.reconstructor())
                find = getattr(approach, "plain_model", None)
                self._plain = find(self.catalog) if find is not None else None
                self._plain_loaded = True
            return self._plain

    def _reconstructor(self):
        """The model of the approach that reconstructs images (the autoencoder).

        Raises:
            ValueError: No registered approach reconstructs, or its store is not available.
        """
        name = approaches_mod.reconstructor()
        if name is None:
            raise ValueError("no approach of this installation reconstructs images")
        self.loader.store(name)  # says why it is unavailable, if it is
        return self.loader.model(name)

    def drift(self, retrain_ratio: float = 1.5, retrain_share: float = 0.2) -> list[Drift]:
        """How far the catalogue has moved from what its learned models were fitted on.

        Each available approach that learns says it in plain words (see
        :meth:`imgsim.approaches.base.Approach.drift`): for the autoencoder, how the
        reconstruction error of items added since training compares with its validation error
        (retraining advised past ``retrain_ratio``); for every learner, retraining is advised when
        the new items are more than ``retrain_share`` of the catalogue.

        Returns:
            One :class:`~imgsim.approaches.base.Drift` per learned approach.
        """
        found = (approaches_mod.get(a).drift(self.catalog, self.loader.model(a), retrain_ratio=retrain_ratio,
                                             retrain_share=retrain_share) for a in self.loader.approaches())
        return [d for d in found if d is not None]

    def embedding_map(self, approach: str, limit: int = 3000, seed: int = 0) -> pd.DataFrame:
        """A 2-D PCA of up to ``limit`` items' embeddings, for a scatter plot.

        Returns:
            A frame with ``x``, ``y``, ``row`` and ``category`` (``(none)`` when empty).
        """
        if limit < 2:
            raise ValueError(f"`limit` must be >= 2. Received: limit={limit}")
        x = np.asarray(self.loader.store(approach).embeddings, dtype=np.float64)
        rows = np.sort(np.random.default_rng(seed).permutation(len(x))[:limit])
        x = x[rows] - x[rows].mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T if vt.shape[0] >= 2 else np.zeros((len(rows), 2))
        return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "row": rows,
                             "category": self.items["category"].iloc[rows].replace("", "(none)").to_numpy()})

    def labels(self, label_column: str | None = None) -> np.ndarray:
        """The label of every item (``label`` column by default).

        Raises:
            ValueError: The catalogue has no such column.
        """
        column = label_column or self.catalog.label_column()
        if column not in self.items.columns:
            columns = ", ".join(c for c in self.items.columns if c not in ("thumb", "thumb_path", "message"))
            raise ValueError(f"catalogue {self.catalog.name} has no column {column!r}. Columns: {columns}")
        return self.items[column].fillna("").astype(str).to_numpy()

    def evaluate(self, label_column: str | None = None, k: int = 10, *,
                 approaches: list[str] | None = None, curve_k: int = 0) -> dict[str, Any]:
        """Leave-one-out retrieval quality of each approach, by ``label_column``.

        ``tuned`` is scored only on items whose labels were held out of its fit (see
        :func:`imgsim.approaches.tuned.cross_validated_scores`).

        Returns:
            ``{"k", "label_column", "n", "chance", <approach>: {"precision@1", "precision@k",
            "map@k", ["curve"]}}``.
        """
        from imgsim.evaluate import chance_precision

        if k <= 0:
            raise ValueError(f"`k` must be >= 1. Received: k={k}")
        column = label_column or self.catalog.label_column()
        labels = self.labels(column)
        n_labelled = int((labels != "").sum())
        if n_labelled < 2:
            raise ValueError(f"catalogue {self.catalog.name} has fewer than 2 items labelled by {column!r}")
        report: dict[str, Any] = {"k": k, "label_column": column, "n": n_labelled,
                                  "chance": chance_precision(labels)}
        def embeddings_of(name: str) -> np.ndarray:
            return np.asarray(self.loader.store(name).embeddings)

        for approach in approaches or self.loader.approaches():
            metric = self.loader.store(approach).manifest.get("metric", "cosine")
            report[approach] = approaches_mod.get(approach).evaluate(
                embeddings_of, labels, k, metric, curve_k, model_of=lambda a=approach: self.loader.model(a))
        return report
