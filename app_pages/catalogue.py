"""Catalogue: what is loaded, its items, what failed to import, and importing and changing catalogues.

The app is meant to face the internet, so a browser user builds only from what they upload (a
zip of images or a CSV of image URLs, at most ``imgsim.ANONYMOUS_MAX_ITEMS`` items). Server
folders are offered only when the operator lists the folders that may be read in
``IMGSIM_LOCAL_ROOTS``. Whoever builds a catalogue gets its edit key, shown once; with it they
add, remove or rebuild later from any browser (see :mod:`app_support.edit_rights`). The
operator's catalogues (the demo included) have no key and are read-only to everyone. A build
that fails publishes nothing; uploads are deleted once their build or add ends.
"""

import time
from pathlib import Path

import streamlit as st

import imgsim
from app_support import edit_rights, state, uploads
from app_support.engine import build_with_progress
from app_support.gallery import gallery, source_words
from app_support.query import MAX_UPLOAD_BYTES, UPLOAD_TYPES
from app_support.sidebar import current_engine
from app_support.text import bold, plain


def show_notices() -> None:
    """What the last run left to say (a build's result, an add, a remove), and a new key, once."""
    for level, markdown in st.session_state.pop(state.NOTICES, []):
        getattr(st, level)(markdown)
    new = st.session_state.pop(state.NEW_KEY, None)
    if new is not None:
        name, key = new
        st.info(f"The edit key of {bold(name)}, shown only this once: keep it (or the link below) to add, "
                "remove or rebuild this catalogue later, from any browser. Without it the catalogue is "
                "read-only, to you too.")
        st.code(key, language=None)
        st.markdown(f"[Open {plain(name)} with its edit key]({edit_rights.link(name, key)})")


def refuse(message: str) -> None:
    """Shows ``message`` (plain text without server paths: it may quote the upload) and ends this run."""
    st.error(uploads.public_message(message))
    st.stop()


st.title("Catalogue")
show_notices()
engine = current_engine()
editable = False
if engine is not None:
    catalog = engine.catalog
    m = catalog.manifest
    editable = edit_rights.may_edit(catalog.name)
    keyed = imgsim.has_edit_key(catalog.root)
    origin = ("you may change it" if editable else "read-only: unlock it with its edit key below" if keyed
              else "read-only (the operator's)")
    st.markdown(f"{bold(catalog.name)} · {m['n_ok']} of {m['n_items']} items imported · from "
                f"{plain(source_words(m.get('source_kind')))} · updated {plain(m['updated'])} · {origin}")
    ready = engine.approaches()
    st.markdown("Approaches ready: " + plain(", ".join(engine.label(a) for a in ready) or "none"))
    for approach, why in engine.unavailable().items():
        st.caption(uploads.public_message(f"{approach}: {why}"))
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
                table = group[["id", "message"]].head(5).assign(message=lambda g: g["message"].map(uploads.without_paths))
                st.dataframe(table, hide_index=True)  # cells are text
    st.subheader("Items")
    gallery(catalog)
    if not editable and keyed:
        with st.form("unlock"):
            key = st.text_input(f"Edit key of {catalog.name}", type="password", key="edit-key")
            if st.form_submit_button("Unlock"):
                if edit_rights.unlock(catalog.name, key):
                    state.notify("success", f"{bold(catalog.name)} is unlocked: you may change it.")
                    st.rerun()
                st.error(f"That key does not open {bold(catalog.name)}.")


def add_files(root: Path, files: list) -> dict[str, int]:
    """Adds uploaded photos and zips to the catalogue at ``root``; the upload is deleted after."""
    totals = {"added": 0, "updated": 0, "failed": 0}
    with uploads.saved(files) as paths:
        zips = [str(p) for p in paths if p.suffix == ".zip"]
        images = [str(p) for p in paths if p.suffix != ".zip"]
        changed = None
        for source in [*zips, *([images] if images else [])]:
            changed, counts = imgsim.add_items(root, source, max_items=imgsim.ANONYMOUS_MAX_ITEMS)
            totals = {k: totals[k] + counts[k] for k in totals}
        imgsim.refresh(changed)
    return totals


if engine is not None and editable:
    st.divider()
    st.subheader(f"Change {plain(engine.catalog.name)}")
    st.caption("Added items are embedded with the models as they are (nothing is retrained); an item "
               "whose id is already there is updated. Removing drops rows; nothing is re-embedded.")
    with st.form("add"):
        added = st.file_uploader(f"Photos (up to {uploads.PHOTO_MB} MB each) or a zip of photos (up to "
                                 f"{uploads.ARCHIVE_MB} MB in all)", type=[*UPLOAD_TYPES, "zip"],
                                 accept_multiple_files=True, key="add-files", max_upload_size=uploads.ARCHIVE_MB)
        if st.form_submit_button("Add"):
            if not added:
                st.error("Choose photos or a zip to add.")
            elif sum(f.size for f in added) > uploads.ARCHIVE_MB * 2**20 or len(added) > uploads.MAX_FILES:
                st.error(f"Up to {uploads.MAX_FILES} files and {uploads.ARCHIVE_MB} MB are accepted at a time.")
            elif any(f.size > MAX_UPLOAD_BYTES and not f.name.lower().endswith(".zip") for f in added):
                st.error(f"Photos up to {uploads.PHOTO_MB} MB each are accepted.")
            else:
                try:
                    with st.spinner("Adding and embedding the new items…"):
                        counts = add_files(engine.catalog.root, added)
                except (imgsim.ImgsimError, ValueError, OSError) as err:
                    st.error("Nothing more was added: " + uploads.public_message(err))
                else:
                    state.notify("success", f"{counts['added']} added, {counts['updated']} updated, "
                                            f"{counts['failed']} could not be imported.")
                    st.rerun()  # the header, chart, gallery and sidebar show the new items
    with st.form("remove"):
        items = engine.items
        names = items["name"].fillna("").astype(str).where(lambda n: n != "", items["id"])
        labels = dict(zip(items["id"], names))
        chosen = st.multiselect("Items to remove", list(labels)[:5000], format_func=lambda i: labels[i],
                                key="remove-items", select_all=False)
        if st.form_submit_button("Remove") and chosen:
            if len(set(chosen)) >= len(labels):
                st.error("A catalogue keeps at least one item; to start over, build it again.")
            else:
                try:
                    changed, removed = imgsim.remove_items(engine.catalog.root, chosen)
                    imgsim.refresh(changed)
                except (ValueError, imgsim.ImgsimError) as err:
                    st.error(uploads.public_message(err))
                else:
                    state.notify("success", f"{removed} removed.")
                    st.rerun()

st.divider()
st.subheader("Import a catalogue")
roots = imgsim.local_roots()
st.caption("Upload a zip of images (sub-folders become categories) or a Flipkart-style CSV of image "
           f"URLs, of up to {uploads.ARCHIVE_MB} MB and {imgsim.ANONYMOUS_MAX_ITEMS:,} items. Each item "
           "that cannot be imported is listed with the reason; the rest are searchable.")
with st.form("import"):
    upload = st.file_uploader(f"A zip of images, or a CSV of image URLs (up to {uploads.ARCHIVE_MB} MB)",
                              type=["zip", "csv"], key="import-file", max_upload_size=uploads.ARCHIVE_MB)
    source = ""
    if roots:
        source = st.text_input("…or a folder or CSV on this server",
                               placeholder=str(roots[0] / "my-shop"),
                               help="Only under: " + plain(", ".join(str(r) for r in roots)))
    name = st.text_input("Catalogue name", placeholder="my-shop", max_chars=64)
    submitted = st.form_submit_button("Build", type="primary")


def build(source: str, target: Path, existed: bool) -> None:
    """Builds ``source`` into ``target``; on success keeps a notice (and a new key) and reruns."""
    started = time.perf_counter()
    options = imgsim.BuildOptions(max_items=imgsim.ANONYMOUS_MAX_ITEMS)
    built = build_with_progress(source, target, options)
    if built is None:
        uploads.discard_failed(target, existed)  # nothing published; the name can be used again
        return
    if not existed:
        key = imgsim.issue_edit_key(target)
        edit_rights.grant(target.name, key)
        st.session_state[state.NEW_KEY] = (target.name, key)
    failed = built.manifest["n_items"] - built.manifest["n_ok"]
    state.notify("success", f"Catalogue {bold(target.name)} is ready: {built.manifest['n_ok']} items in "
                            f"{time.perf_counter() - started:.0f} s" + (f" ({failed} could not be imported)."
                                                                        if failed else "."))
    st.session_state[state.PENDING_CATALOG] = target.name
    st.rerun()  # the sidebar lists and picks it now


if submitted:
    try:
        name = imgsim.valid_catalog_name(name or (Path(upload.name).stem if upload else ""))
    except ValueError as err:
        refuse(f"Choose another name: {err}")
    target = imgsim.default_catalog_path(name)
    existed = target.exists()
    if existed and not edit_rights.may_edit(name):
        refuse(f"A catalogue called {name!r} already exists and this browser does not hold its edit key; "
               "choose another name, or unlock it first.")
    if upload is not None:
        if Path(upload.name).suffix.lower() not in (".zip", ".csv"):
            refuse("Upload a .zip of images or a .csv of image URLs.")
        if upload.size > uploads.ARCHIVE_MB * 2**20:
            refuse(f"That file is {upload.size / 2**20:.0f} MB; uploads up to {uploads.ARCHIVE_MB} MB are accepted.")
        with uploads.saved([upload]) as saved:
            build(str(saved[0]), target, existed)
    elif source.strip():
        try:
            source = str(imgsim.check_local_path(source.strip()))
        except ValueError as err:
            refuse(str(err))
        build(source, target, existed)
    else:
        refuse("Upload a zip or a CSV" + (", or give a folder on this server." if roots else "."))
