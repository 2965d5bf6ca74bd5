"""Simulated phone photos of catalogue images, made fast enough to be training inputs.

The ``robust`` autoencoder (:class:`imgsim.approaches.autoencoder.Mode`) learns each studio image
from a composite of it on a random scene, so its latent ignores the scene.
"""

from __future__ import annotations

import numpy as np

SCENE_BANK = 96


class Compositor:
    """Makes simulated phone photos of catalogue images at a model's input size, fast.

    Each product is cut out once (:func:`imgsim.phonesim.product_mask`); scenes come from a bank
    made once; each composite is a :func:`imgsim.phonesim.simulate_photo` of about
    ``composite_scale`` times the input side in a random phone orientation (3:4, 4:3 or square),
    then padded to a square with white and resized, as a query photo is.

    Args:
        images: ``(N, S, S, 3)`` uint8 catalogue images.
        seed: Seeds the scene bank.
        composite_scale: The composite's longer side over ``S``.
        scenes: Another compositor's scene bank to share (same ``composite_scale``).
    """

    def __init__(self, images: np.ndarray, seed: int, composite_scale: float = 1.5,
                 scenes: list[np.ndarray] | None = None) -> None:
        from imgsim.phonesim import make_scene, product_mask

        self.images = images
        self.size = images.shape[1]
        self.long = max(8, round(self.size * composite_scale))
        self.short = max(8, round(self.long * 3 / 4))
        self._masks: dict[int, np.ndarray] = {}
        self._product_mask = product_mask
        if scenes is None:
            rng = np.random.default_rng([seed, 2])
            scenes = [make_scene(rng, (self.long, self.long)) for _ in range(SCENE_BANK)]
        self.scenes = scenes

    def _rgba(self, index: int) -> np.ndarray:
        if index not in self._masks:
            alpha = (self._product_mask(self.images[index]) * 255 + 0.5).astype(np.uint8)
            self._masks[index] = np.dstack([self.images[index], alpha])
        return self._masks[index]

    def photo(self, index: int, rng: np.random.Generator, box_fraction: float = 0.0) -> np.ndarray:
        """A simulated phone photo of image ``index`` as the model sees it: ``(S, S, 3)`` uint8.

        With probability ``box_fraction`` the photo is cropped to the product's box grown by a
        random margin (0-30% of the box per side), as a query cropped to a box is.
        """
        from imgsim.ingest.images import to_square
        from imgsim.phonesim import simulate_photo

        orientation = rng.integers(3)
        w, h = ((self.short, self.long), (self.long, self.short), (self.long, self.long))[orientation]
        scene = self.scenes[rng.integers(len(self.scenes))]
        x0, y0 = rng.integers(0, self.long - w + 1), rng.integers(0, self.long - h + 1)
        scene = scene[y0:y0 + h, x0:x0 + w]
        if rng.random() < 0.5:
            scene = scene[:, ::-1]
        shot = simulate_photo(self._rgba(index), rng, size=(w, h), scene=np.ascontiguousarray(scene))
        rgb = shot.rgb
        if box_fraction and rng.random() < box_fraction:
            x0, y0, x1, y1 = shot.box
            mx, my = rng.uniform(0.0, 0.3, 2) * (x1 - x0, y1 - y0)
            rgb = rgb[max(0, int(y0 - my)):min(h, int(np.ceil(y1 + my))),
                      max(0, int(x0 - mx)):min(w, int(np.ceil(x1 + mx)))]
        return to_square(np.ascontiguousarray(rgb), self.size)

    def inputs(self, indices: np.ndarray, rng: np.random.Generator, clean_fraction: float,
               box_fraction: float = 0.0) -> np.ndarray:
        """Inputs for images ``indices``: each a composite, or with ``clean_fraction`` itself."""
        out = self.images[indices].copy()
        for j, index in enumerate(indices):
            if rng.random() >= clean_fraction:
                out[j] = self.photo(int(index), rng, box_fraction)
        return out
