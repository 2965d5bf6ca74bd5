"""The autoencoder approach: its nets (:mod:`.nets`), training (:mod:`.training`), the phone-photo
compositor it trains robustly with (:mod:`.compositor`) and the approach itself (:mod:`.approach`).

This package's ``__init__`` only gathers the names other modules use.
"""

from imgsim.approaches.autoencoder.approach import AUTOENCODER, AutoencoderApproach
from imgsim.approaches.autoencoder.compositor import SCENE_BANK, Compositor
from imgsim.approaches.autoencoder.nets import (
    FORMAT_VERSION,
    KIND,
    MODEL_FILE,
    Autoencoder,
    AutoencoderConfig,
    Mode,
    Variant,
    build,
    build_conv,
    build_seed,
    psnr,
)
from imgsim.approaches.autoencoder.training import CheckpointError, train

__all__ = ["AUTOENCODER", "FORMAT_VERSION", "KIND", "MODEL_FILE", "SCENE_BANK", "Autoencoder",
           "AutoencoderApproach", "AutoencoderConfig", "CheckpointError", "Compositor", "Mode", "Variant",
           "build", "build_conv", "build_seed", "psnr", "train"]
