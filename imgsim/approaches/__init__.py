"""The approaches: the ways a catalogue item becomes a vector, one module each; and their registry.

Everything about one approach lives in its module (see :class:`~imgsim.approaches.base.Approach`):
its settings, build, retrain, drift and region capability. The build, the engine, the command
line and the pages only loop over :data:`APPROACHES`, so a new approach is one new module plus
one :func:`register` line below (or a call to it from anywhere before use), and
``tests/test_contract.py`` tests it by its being registered.
"""

from __future__ import annotations

from imgsim.approaches.autoencoder.approach import AUTOENCODER, AutoencoderApproach
from imgsim.approaches.base import (
    Approach,
    Drift,
    NoSettings,
    NotApplicableError,
    RegionSupport,
    ensure_store,
    load_squares,
)
from imgsim.approaches.pretrained import PRETRAINED, Pretrained, pretty_model
from imgsim.approaches.tuned import TUNED, Tuned

#: Every approach, in the order the app shows them and the build runs them.
APPROACHES: dict[str, Approach] = {}


def register(approach: Approach) -> Approach:
    """Adds ``approach`` to the registry (after those already there) and returns it.

    Raises:
        ValueError: It has no name, or one already taken, or depends on an unregistered one.
    """
    if not approach.name or approach.name in APPROACHES:
        raise ValueError(f"an approach needs a name of its own. Received: {approach.name!r} "
                         f"(registered: {', '.join(APPROACHES)})")
    missing = [dep for dep in approach.depends_on if dep not in APPROACHES]
    if missing:
        raise ValueError(f"`{approach.name}` depends on approaches not registered before it. "
                         f"Received: depends_on={approach.depends_on}")
    APPROACHES[approach.name] = approach
    return approach


def unregister(name: str) -> None:
    """Removes approach ``name`` (a test's toy approach) and any approach that depends on it."""
    for other in [a for a in APPROACHES.values() if name in a.depends_on]:
        unregister(other.name)
    APPROACHES.pop(name, None)


register(Pretrained())
register(AutoencoderApproach())
register(Tuned())


def get(name: str) -> Approach:
    """The approach called ``name``.

    Raises:
        ValueError: No such approach.
    """
    try:
        return APPROACHES[name]
    except KeyError:
        raise ValueError(f"`approach` must be one of {', '.join(APPROACHES)}. Received: {name!r}") from None


def names() -> list[str]:
    """Every approach's name, in order."""
    return list(APPROACHES)


def learners() -> list[str]:
    """The approaches that learn from the catalogue (and so can be retrained), in order."""
    return [name for name, approach in APPROACHES.items() if approach.learns]


def reconstructor() -> str | None:
    """The first approach whose model reconstructs images (the autoencoder), or None."""
    return next((name for name, approach in APPROACHES.items() if approach.reconstructs), None)


def with_dependencies(requested: tuple[str, ...] | list[str]) -> list[str]:
    """``requested`` plus what it depends on, in build order."""
    wanted: set[str] = set()

    def add(name: str) -> None:
        for dep in get(name).depends_on:
            add(dep)
        wanted.add(name)

    for name in requested:
        add(name)
    return [n for n in APPROACHES if n in wanted]


__all__ = ["APPROACHES", "AUTOENCODER", "PRETRAINED", "TUNED", "Approach", "Drift", "NoSettings",
           "NotApplicableError", "RegionSupport", "ensure_store", "get", "learners", "load_squares", "names",
           "pretty_model", "reconstructor", "register", "unregister", "with_dependencies"]
