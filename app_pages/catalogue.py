"""Catalogue: what is loaded, what failed to import, and importing catalogues.

The app is meant to face the internet, so a browser user builds only from what they upload (a
zip of images or a CSV of image URLs). Server folders are offered only when the operator lists
the folders that may be read in ``IMGSIM_LOCAL_ROOTS``. A browser user may replace only the
catalogues they built in their own session; the operator's catalogues (the demo included) are
read-only to them.
"""

import uuid
from pathlib import Path

import streamlit as st

import imgsim
from app_support import state
from app_support.engine import build_with_progress
from app_support.query import UPLOAD_TYPES
from app_support.sidebar import current_engine
from app_support.text import bold, plain

#: Largest zip or CSV accepted from a browser; the zip's inflated size has its own limits.
MAX_ARCHIVE_BYTES = 200 * 2**20

st.title("Catalogue")
engine = current_engine()
owned = state.owned_catalogs()
if engine is not None:
    catalog = engine.catalog
    m = catalog.manifest
    origin = "built in this session" if catalog.name in owned else "read-only here"
    st.markdown(f"{bold(catalog.name)} · {m['n_ok']} of {m['n_items']} items imported · "
                f"{plain(m['source_kind'])} · updated {plain(m['updated'])} · {origin}")
    ready = engine.approaches()
    st.markdown("Approaches ready: " + plain(", ".join(engine.label(a) for a in ready) or "none"))
    for approach, why in engine.unavailable().items():
        st.caption(plain(f"{approach}: {why}"))
    left, right = st.columns(2)
    with left:
        st.subheader("Items by category")
        counts = engine.items["category"].replace("", "(none)").value_counts()  # chart labels are text
        st.bar_chart(counts, horizontal=True)
    with right:
        st.subheader("Import failures")
        failures = catalog.failures()
        if failures.empty:
            st.success("Every item was imported.")
        else:
            for status, group in failures.groupby("status"):
                st.markdown(f"{bold(status)}: {len(group)}")
                st.dataframe(group[["id", "message"]].head(5), hide_index=True)  # cells are text

if engine is not None and engine.catalog.name in owned:
    st.divider()
    st.subheader(f"Change {plain(engine.catalog.name)}")
    st.caption("Added items are embedded with the models as they are (nothing is retrained); an item "
               "whose id is already there is updated. Removing drops rows; nothing is re-embedded.")
    with st.form("add"):
        added = st.file_uploader("Photos or a zip of photos to add", type=[*UPLOAD_TYPES, "zip"],
                                 accept_multiple_files=True, key="add-files")
        if st.form_submit_button("Add"):
            if not added:
                st.error("Choose photos or a zip to add.")
            elif sum(f.size for f in added) > MAX_ARCHIVE_BYTES:
                st.error(f"Uploads up to {MAX_ARCHIVE_BYTES // 2**20} MB at a time are accepted.")
            else:
                folder = imgsim.data_dir() / "uploads" / uuid.uuid4().hex
                folder.mkdir(parents=True)
                paths = []
                for i, upload_file in enumerate(added[:1000]):
                    suffix = Path(upload_file.name).suffix.lower()
                    target_file = folder / f"{i:04d}-{Path(upload_file.name).stem[:40]}{suffix}"
                    target_file.write_bytes(upload_file.getvalue())
                    paths.append(target_file)
                zips = [p for p in paths if p.suffix == ".zip"]
                try:
                    with st.spinner("Adding and embedding the new items…"):
                        if zips:
                            for z in zips:
                                changed, counts = imgsim.add_items(engine.catalog.root, str(z))
                        images = [str(p) for p in paths if p.suffix != ".zip"]
                        if images:
                            changed, counts = imgsim.add_items(engine.catalog.root, images)
                        imgsim.refresh(changed)
                    st.success(f"{counts['added']} added, {counts['updated']} updated, "
                               f"{counts['failed']} could not be imported.")
                except (imgsim.ImgsimError, ValueError, OSError) as err:
                    st.error(plain(f"Nothing was added: {err}"))
    with st.form("remove"):
        names = engine.items["name"].fillna("").astype(str).where(lambda n: n != "", engine.items["id"])
        labels = dict(zip(engine.items["id"], names))
        chosen = st.multiselect("Items to remove", list(labels)[:5000], format_func=lambda i: labels[i],
                                key="remove-items")
        if st.form_submit_button("Remove") and chosen:
            try:
                changed, removed = imgsim.remove_items(engine.catalog.root, chosen)
                imgsim.refresh(changed)
                st.success(f"{removed} removed.")
            except (ValueError, imgsim.ImgsimError) as err:
                st.error(plain(err))

st.divider()
st.subheader("Import a catalogue")
roots = imgsim.local_roots()
st.caption("Upload a zip of images (sub-folders become categories) or a Flipkart-style CSV of image "
           "URLs. Each item that cannot be imported is listed with the reason; the rest are searchable.")
with st.form("import"):
    upload = st.file_uploader("A zip of images, or a CSV of image URLs", type=["zip", "csv"], key="import-file")
    source = ""
    if roots:
        source = st.text_input("…or a folder or CSV on this server",
                               placeholder=str(roots[0] / "my-shop"),
                               help="Only under: " + plain(", ".join(str(r) for r in roots)))
    name = st.text_input("Catalogue name", placeholder="my-shop", max_chars=64)
    submitted = st.form_submit_button("Build", type="primary")


def refuse(message: str) -> None:
    """Shows ``message`` (plain text: it may quote the upload) and ends this run."""
    st.error(plain(message))
    st.stop()


if submitted:
    try:
        name = imgsim.valid_catalog_name(name or (Path(upload.name).stem if upload else ""))
    except ValueError as err:
        refuse(f"Choose another name: {err}")
    target = imgsim.default_catalog_path(name)
    if target.exists() and name not in owned:
        refuse(f"A catalogue called {name!r} already exists and was not built in this session; "
               "choose another name.")
    if upload is not None:
        if upload.size > MAX_ARCHIVE_BYTES:
            refuse(f"That file is {upload.size / 2**20:.0f} MB; uploads up to "
                   f"{MAX_ARCHIVE_BYTES // 2**20} MB are accepted.")
        folder = imgsim.data_dir() / "uploads" / uuid.uuid4().hex  # never merges with another upload
        folder.mkdir(parents=True)
        suffix = ".zip" if upload.name.lower().endswith(".zip") else ".csv"
        saved = folder / f"upload{suffix}"
        saved.write_bytes(upload.getvalue())
        source = str(saved)
    elif source.strip():
        try:
            source = str(imgsim.check_local_path(source.strip()))
        except ValueError as err:
            refuse(str(err))
    else:
        refuse("Upload a zip or a CSV" + (", or give a folder on this server." if roots else "."))
    if build_with_progress(source, target):
        owned.add(name)
        st.session_state[state.PENDING_CATALOG] = name
        st.success(f"Catalogue {bold(name)} is ready: pick it in the sidebar.")
