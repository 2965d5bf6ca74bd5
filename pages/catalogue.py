"""Catalogue: what is loaded, what failed to import, and importing or refreshing catalogues."""

import re
import zipfile
from pathlib import Path

import streamlit as st

from imgsim.artifacts import data_dir
from imgsim.catalog import default_catalog_path
from pages import shared

MAX_UNZIPPED = 2 * 2**30

st.title("Catalogue")
engine = shared.current_engine()
if engine is not None:
    catalog = engine.catalog
    m = catalog.manifest
    st.markdown(f"**{catalog.name}** · {m['n_ok']} of {m['n_items']} items imported · source "
                f"`{m['source']}` ({m['source_kind']}) · updated {m['updated']}")
    ready = engine.approaches()
    st.markdown("Approaches ready: " + (", ".join(shared.APPROACH_LABELS[a] for a in ready) or "none"))
    for approach, why in engine.unavailable().items():
        st.caption(f"{approach}: {why}")
    left, right = st.columns(2)
    with left:
        st.subheader("Items by category")
        counts = engine.items["category"].replace("", "(none)").value_counts()
        st.bar_chart(counts, horizontal=True)
    with right:
        st.subheader("Import failures")
        failures = catalog.failures()
        if failures.empty:
            st.success("Every item was imported.")
        else:
            for status, group in failures.groupby("status"):
                st.markdown(f"**{status}**: {len(group)}")
                st.dataframe(group[["id", "source", "message"]].head(5), hide_index=True)

st.divider()
st.subheader("Import or refresh a catalogue")
st.caption("A folder of images (sub-folders become categories), a Flipkart-style CSV of image URLs, "
           "or a zip of images. Re-importing the same source only redoes what is new or failed.")
with st.form("import"):
    source = st.text_input("Folder or CSV path on this machine", placeholder="/path/to/images or products.csv")
    labels = st.text_input("Labels CSV for a folder (optional; needs a `path` column)")
    upload = st.file_uploader("…or upload a zip of images", type=["zip"])
    name = st.text_input("Catalogue name", placeholder="my-shop")
    tune = st.checkbox("Also tune the CNN features on the labels (needs a label or category that repeats)")
    submitted = st.form_submit_button("Build", type="primary")
if submitted:
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", name.strip()) or None
    if upload is not None:
        safe = safe or re.sub(r"[^A-Za-z0-9_-]", "-", Path(upload.name).stem)
        target = data_dir() / "uploads" / safe
        target.mkdir(parents=True, exist_ok=True)
        try:
            with zipfile.ZipFile(upload) as archive:
                total = sum(m.file_size for m in archive.infolist())
                if total > MAX_UNZIPPED:  # a zip bomb, or simply more than this page should unpack
                    raise zipfile.BadZipFile(f"it would unpack to {total / 2**30:.1f} GB "
                                             f"(limit {MAX_UNZIPPED / 2**30:.0f} GB)")
                for member in archive.infolist():
                    path = (target / member.filename).resolve()
                    if target.resolve() in path.parents and not member.is_dir():  # no zip-slip
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(archive.read(member))
            source = str(target)
        except zipfile.BadZipFile as err:
            st.error(f"That zip cannot be imported: {err}")
            source = ""
    if not source.strip():
        st.error("Give a folder or CSV path, or upload a zip.")
    else:
        safe = safe or re.sub(r"[^A-Za-z0-9_-]", "-", Path(source.strip().rstrip("/")).stem) or "catalog"
        from imgsim.build import BuildOptions

        approaches = ("pretrained", "autoencoder", "tuned") if tune else ("pretrained", "autoencoder")
        options = BuildOptions(approaches=approaches, labels=labels.strip() or None)
        if shared.build_with_progress(source.strip(), default_catalog_path(safe), options):
            st.session_state["catalog"] = safe
            st.success(f"Catalogue **{safe}** is ready: pick it in the sidebar.")
