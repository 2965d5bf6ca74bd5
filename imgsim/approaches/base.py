"""What every approach is: the base class the registry in :mod:`imgsim.approaches` holds.

An approach is everything about one way of turning a catalogue item into a vector: its name and
label, its settings (a frozen dataclass it reads back from its own manifests), where its store
and model live, how it builds and retrains them (the only code that writes its artifacts), how
it loads the model that embeds queries, how far the catalogue has drifted from what it learned,
and whether a query can be a set of regions of a photo. The build, the engine and the command
line only loop over the registry, so an approach they have never heard of works everywhere.

Layout inside a catalogue::

    stores/<approach>/       the embedding store (see :mod:`imgsim.storage.stores`)
    models/<approach>/       a learned model, for approaches that learn one
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from imgsim.errors import ImgsimError
from imgsim.ingest.catalog import Catalog
from imgsim.progress import Progress, silent
from imgsim.storage import layout

Log = Callable[[str], None]
ProgressFactory = Callable[[str], Progress]
ModelOf = Callable[[str], Any]


class BuildContext(Protocol):
    """The catalogue-wide build options an approach may base its default settings on."""

    label_column: str | None


class NotApplicableError(ImgsimError, ValueError):
    """An approach cannot be built for this catalogue (say, ``tuned`` without repeated labels)."""


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """The settings of an approach that has none to choose."""


@dataclasses.dataclass(frozen=True)
class Drift:
    """How far the catalogue has moved from what an approach learned, in plain words.

    Attributes:
        approach: The approach's name.
        line: One line for people (no shell commands: browsers read it).
        needs_retrain: Whether retraining is advised; the command line turns it into a command.
    """

    approach: str
    line: str
    needs_retrain: bool = False


@dataclasses.dataclass(frozen=True)
class RegionSupport:
    """Whether a store's queries can be regions of a photo, and whose feature map they pool.

    Attributes:
        extractor: The feature-map extractor (``efficientnet_lite0``, ...) whose region vectors
            :meth:`Approach.region_vectors` maps into the store's space; ``None`` when regions
            are not available.
        reason: Why not, in plain words, when ``extractor`` is ``None``.
    """

    extractor: str | None
    reason: str = ""

    def __post_init__(self) -> None:
        if (self.extractor is None) == (not self.reason):
            raise ValueError("`RegionSupport` needs an extractor or a reason, not both. "
                             f"Received: extractor={self.extractor!r}, reason={self.reason!r}")


class Approach:
    """One way of embedding a catalogue; subclasses fill in the details.

    Class attributes:
        name: The registry key, also the store's directory name.
        title: The display label when no store says more.
        depends_on: Approaches whose stores this one needs first (built before it).
        settings_type: Its frozen settings dataclass (defaults valid).
        supports_regions: Whether :meth:`region_support` can say yes.
        learns: Whether it learns a model from the catalogue (and so can :meth:`retrain`).
        reconstructs: Whether its model has ``errors(batch)`` (reconstructions, MSE, PSNR).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    depends_on: ClassVar[tuple[str, ...]] = ()
    settings_type: ClassVar[type] = NoSettings
    supports_regions: ClassVar[bool] = False
    learns: ClassVar[bool] = False
    reconstructs: ClassVar[bool] = False

    # -- where it lives and what it is called ---------------------------------------------------

    def store_dir(self, catalog: Catalog) -> Path:
        """``CATALOG/stores/<name>``."""
        return layout.store_dir(catalog.root, self.name)

    def model_dir(self, catalog: Catalog) -> Path:
        """``CATALOG/models/<name>`` (unused by approaches that learn nothing)."""
        return layout.model_dir(catalog.root, self.name)

    def label(self, manifest: dict[str, Any] | None = None) -> str:
        """A display label naming the model a store was really built with."""
        return self.title

    def not_built_reason(self, catalog: Catalog) -> str:
        """Why there is no store yet, in plain words (no shell commands: browsers read it)."""
        return "not built yet for this catalogue"

    # -- settings ------------------------------------------------------------------------------

    def default_settings(self, options: BuildContext) -> Any:
        """The settings used when the build options give none for this approach."""
        return self.settings_type()

    def settings_from_manifest(self, catalog: Catalog) -> Any | None:
        """The settings the catalogue's store (or model) was built with; None where unknown.

        A refresh rebuilds with exactly these, so items added later are embedded as the others
        were. Approaches without settings have nothing to read back.
        """
        return self.settings_type() if self.settings_type is NoSettings else None

    def check_settings(self, settings: Any) -> None:
        """Refuses settings of another type than :attr:`settings_type`.

        Raises:
            ValueError: Naming the type received.
        """
        if not isinstance(settings, self.settings_type):
            raise ValueError(f"settings of `{self.name}` must be {self.settings_type.__name__}. "
                             f"Received: {type(settings).__name__}")

    # -- building ------------------------------------------------------------------------------

    def load_model(self, catalog: Catalog, manifest: dict[str, Any], model_of: ModelOf):
        """The model that embeds queries for the store described by ``manifest``.

        Args:
            catalog: The catalogue.
            manifest: The store's manifest.
            model_of: Gives the (cached) model of another approach, for approaches built on one.

        Raises:
            ArtifactError: The model is missing, damaged or not the one the store was built with.
        """
        raise NotImplementedError

    def build(self, catalog: Catalog, settings: Any, *, log: Log, progress: ProgressFactory,
              learn: bool = True) -> None:
        """Makes the approach's model (if any) and store with ``settings``, redoing only what is stale.

        Args:
            catalog: The ingested catalogue.
            settings: An instance of :attr:`settings_type`.
            log: Receives one line per step.
            progress: Gives a :class:`~imgsim.progress.Progress` per stage name.
            learn: False keeps a learned model as it is and never trains one (after an add or
                remove); the store is still brought up to date.

        Raises:
            NotApplicableError: The approach cannot apply to this catalogue.
        """
        raise NotImplementedError

    def retrain(self, catalog: Catalog, settings: Any, *, log: Log, progress: ProgressFactory) -> None:
        """Learns the model again from the catalogue as it is now, then re-indexes.

        Raises:
            ValueError: The approach learns nothing.
        """
        raise ValueError(f"`{self.name}` learns nothing, so there is nothing to retrain")

    def drift(self, catalog: Catalog, model, *, retrain_ratio: float = 1.5,
              retrain_share: float = 0.2) -> Drift | None:
        """How far the catalogue has moved from what ``model`` learned; None for approaches that learn nothing.

        Args:
            catalog: The catalogue as it is now.
            model: The approach's loaded model.
            retrain_ratio: Advise retraining when new items fit this many times worse.
            retrain_share: Advise retraining when new items are more than this share of all.
        """
        return None

    # -- queries -------------------------------------------------------------------------------

    def region_support(self, manifest: dict[str, Any]) -> RegionSupport:
        """Whether queries of the store described by ``manifest`` can be regions of a photo."""
        return RegionSupport(None, "its vectors are not CNN features that can be pooled over regions")

    def region_vectors(self, model, vectors: np.ndarray) -> np.ndarray:
        """Maps region vectors of :meth:`region_support`'s extractor into this store's space."""
        return vectors

    def evaluate(self, embeddings_of: Callable[[str], np.ndarray], labels: np.ndarray, k: int,
                 metric: str, curve_k: int = 0, model_of: Callable[[], Any] | None = None) -> dict[str, Any]:
        """Leave-one-out retrieval scores of this approach's store (see :mod:`imgsim.evaluate`).

        Args:
            embeddings_of: Gives the store embeddings of an approach by name.
            labels: ``(N,)`` label per item; empty labels are not queries.
            k: Depth.
            metric: The store's metric.
            curve_k: Also return precision@1..curve_k.
            model_of: Gives this approach's loaded model, for an evaluation that refits part of it.
        """
        from imgsim.evaluate import evaluate_embeddings

        return evaluate_embeddings(embeddings_of(self.name), labels, k, metric, curve_k=curve_k)


def ensure_store(approach: str, catalog: Catalog, model, log: Log, progress: Progress = silent) -> None:
    """Builds ``approach``'s store with ``model`` unless it is current (reusing unchanged rows)."""
    from imgsim.storage.stores import build_store, is_current, model_spec

    if is_current(catalog, approach, model_spec(approach, model)):
        log(f"{approach}: store up to date")
    else:
        store = build_store(catalog, approach, model, progress=progress)
        reused = store.manifest.get("reused_rows", 0)
        log(f"{approach}: indexed {len(catalog.ok)} items with {model.name}"
            + (f" ({reused} unchanged rows reused)" if reused else ""))


def added_since(catalog: Catalog, when: str) -> np.ndarray:
    """Rows of ``catalog.ok`` added after the ISO time ``when`` (none when items carry no time)."""
    if "added_at" not in catalog.ok:
        return np.zeros(0, np.int64)
    return np.flatnonzero((catalog.ok["added_at"].fillna("") > when).to_numpy())


def load_squares(catalog: Catalog, size: int, progress: Progress = silent) -> np.ndarray:
    """All ingested items as ``(N, size, size, 3)`` uint8 squares, decoded once."""
    from imgsim.storage.stores import iter_batches

    paths = catalog.thumb_paths()
    out = np.empty((len(paths), size, size, 3), np.uint8)
    done = 0
    for batch in iter_batches(paths, size, 64):
        out[done:done + len(batch)] = batch
        done += len(batch)
        progress(done, len(paths), "decoding")
    return out
