"""Reconstructions: what the autoencoder keeps of an image, and where it errs."""

import numpy as np
import streamlit as st
from matplotlib import colormaps

from pages import shared

st.title("Autoencoder reconstructions")
engine = shared.current_engine()
if engine is not None:
    if "autoencoder" not in engine.approaches():
        st.info(f"This catalogue has no trained autoencoder: {engine.unavailable().get('autoencoder')}")
    else:
        model = engine.model("autoencoder")
        m = model.manifest
        st.caption(f"{m['config']['variant']} autoencoder, {m['config']['image_size']}px input, "
                   f"{m['config']['latent_dim']}-d latent, {m['parameters']:,} parameters, "
                   f"validation MSE {m['val_mse']:.4f} (PSNR {m['val_psnr']:.1f} dB)")
        mode = st.radio("Show", ["Browse", "Random", "Best", "Worst", "Current query"], horizontal=True)
        rows: list[int] = []
        image = None
        if mode == "Browse":
            rows = [st.slider("Item", 0, len(engine.items) - 1, 0)]
        elif mode == "Random":
            if st.button("Another", icon=":material/casino:") or "recon_random" not in st.session_state:
                st.session_state["recon_random"] = np.random.default_rng().choice(len(engine.items), 4, replace=False).tolist()
            rows = st.session_state["recon_random"]
        elif mode in ("Best", "Worst"):
            with st.spinner("Measuring reconstruction error over the catalogue…"):
                errors = engine.reconstruction_errors()
            ordered = errors.sort_values("mse", ascending=mode == "Best")
            rows = ordered["row"].head(4).tolist()
        else:
            shared.query_widgets(engine)
            query = shared.current_query(engine)
            if query is None:
                st.info("Upload a photo, snap one, or try an example.")
            elif query[0] == "item":
                rows = [query[1]]
            else:
                image = query[1]

        def show(recon, title: str) -> None:
            st.markdown(f"**{title}** · MSE {recon.mse:.4f} · PSNR {recon.psnr:.1f} dB")
            heat = (colormaps["magma"](np.clip(recon.error_map / 0.5, 0, 1))[..., :3] * 255).astype(np.uint8)
            cols = st.columns(3)
            cols[0].image(recon.original, caption="input (as the model sees it)", width="stretch")
            cols[1].image(recon.reconstruction, caption="reconstruction", width="stretch")
            cols[2].image(heat, caption="per-pixel error (bright = worse)", width="stretch")

        for row in rows:
            show(engine.reconstruct(row=row), engine.items["name"].iloc[row])
        if image is not None:
            show(engine.reconstruct(image), "Your photo")
