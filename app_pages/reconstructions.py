"""Reconstructions: what the autoencoder keeps of an image, and where it errs.

For a phone photo, the reconstruction is the studio picture the autoencoder imagines for it: a
background-robust autoencoder should paint the product on white, whatever the scene around it.
"""

import numpy as np
import streamlit as st
from matplotlib import colormaps

import imgsim
from app_support import query as q
from app_support import state
from app_support.sidebar import current_engine
from app_support.text import bold, plain

st.title("Autoencoder reconstructions")
engine = current_engine()
if engine is not None:
    reconstructor = imgsim.reconstructing_approach()
    if reconstructor not in engine.approaches():
        st.info(plain(f"This catalogue has no trained autoencoder: {engine.unavailable().get(reconstructor)}"))
    else:
        model = engine.model(reconstructor)
        m = model.manifest
        config = m["config"]
        mode_note = " trained to ignore the scene around a product" if config.get("mode") == "robust" else ""
        st.caption(f"{engine.label(reconstructor)}{mode_note}: {config['image_size']}px input, "
                   f"{config['latent_dim']}-d latent, {m['parameters']:,} parameters, "
                   f"validation MSE {m['val_mse']:.4f} (PSNR {m['val_psnr']:.1f} dB)")
        mode = st.radio("Show", ["Your photo", "Browse", "Random", "Best", "Worst"], horizontal=True)
        n = len(engine.items)
        rows: list[int] = []
        query = None
        if mode == "Browse":
            names = engine.items["name"].astype(str).tolist()
            # A selectbox filters its options as the user types: an item is found by its name.
            rows = [st.selectbox("Item (type to find it by name)", range(n), key=state.RECON_ITEM,
                                 format_func=lambda row: names[row] or str(engine.items["id"].iloc[row]))]
        elif mode == "Random":
            remembered = st.session_state.get(state.RECON_RANDOM) or []
            if (st.button("Another", icon=":material/casino:") or not remembered
                    or max(remembered) >= n):
                remembered = np.random.default_rng().choice(n, min(4, n), replace=False).tolist()
                st.session_state[state.RECON_RANDOM] = remembered
            rows = remembered
        elif mode in ("Best", "Worst"):
            with st.spinner("Measuring reconstruction error over the catalogue…"):
                errors = engine.reconstruction_errors()
            rows = errors.sort_values("mse", ascending=mode == "Best")["row"].head(4).tolist()
        else:
            q.query_widgets(engine, "reconstructions")
            query = q.current_query(engine)
            if query is None:
                st.info("Upload or snap a photo (a phone photo shows what the autoencoder makes of "
                        "the scene around a product), or try an example.")
            elif query.kind == "item":
                rows = [query.row]

        def show(recon, title: str, photo: bool = False) -> None:
            # A plain model trained beside the robust one is shown next to it, for comparison.
            cols = st.columns(3 if recon.plain is None else 4)
            if recon.plain is not None:
                cols[-1].image(recon.plain, caption=f"plain model's reconstruction (PSNR {recon.plain_psnr:.1f} dB)",
                               width="stretch")
            if photo:  # the difference from a scene is no error: the model is meant to drop the scene
                st.markdown(bold(title))
                cols[0].image(recon.original, caption="your photo, cropped to the product box", width="stretch")
                cols[1].image(recon.reconstruction, caption="the studio picture it imagines", width="stretch")
                return
            st.markdown(f"{bold(title)} · MSE {recon.mse:.4f} · PSNR {recon.psnr:.1f} dB")
            heat = (colormaps["magma"](np.clip(recon.error_map / 0.5, 0, 1))[..., :3] * 255).astype(np.uint8)
            cols[0].image(recon.original, caption="input (as the model sees it)", width="stretch")
            cols[1].image(recon.reconstruction, caption="reconstruction", width="stretch")
            cols[2].image(heat, caption="per-pixel difference (bright = larger)", width="stretch")

        for row in rows:
            show(engine.reconstruct(row=row), str(engine.items["name"].iloc[row]))
        if query is not None and query.kind == "image":
            show(engine.reconstruct(query.rgb, box=query.box), query.name, photo=True)
