"""The autoencoder approach: its nets (:mod:`.nets`), training (:mod:`.training`), the phone-photo
compositor it trains robustly with (:mod:`.compositor`) and the approach itself (:mod:`.approach`).

This package's ``__init__`` only gathers the names other modules use.
"""

from imgsim.approaches.autoencoder.approach import AUTOENCODER, AutoencoderApproach
from imgsim.approaches.autoencoder.compositor import Compositor
from imgsim.approaches.autoencoder.nets import (
           Autoencoder,
           AutoencoderConfig,
           Mode,
           Variant,
           build_conv,
           build_seed,
           psnr,
)
from imgsim.approaches.autoencoder.training import CheckpointError, train

__all__ = ["AUTOENCODER", "Autoencoder", "AutoencoderApproach", "AutoencoderConfig", "CheckpointError", "Compositor",
           "Mode", "Variant", "build_conv", "build_seed", "psnr", "train"]
