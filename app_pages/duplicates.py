"""Duplicates: the catalogue's near-duplicate groups side by side, and "keep this one".

Each group is the same photo uploaded more than once (the same bytes, or altered: re-encoded,
resized, cropped, relit, a banner added), told apart from merely similar products by
:func:`imgsim.find_duplicates`. Every member shows its thumbnail, name, original pixel size
and bytes, its shape against the largest, and the pairs that joined it. The key holder of the
catalogue keeps one member of a group; the others are removed as on the Catalogue page.
"""

import streamlit as st

import imgsim
from app_support import duplicates, edit_rights, state
from app_support.sidebar import current_engine
from app_support.text import bold, plain, shorten
from app_support.uploads import public_message

COLUMNS = 4

st.title("Duplicates")
notice = st.session_state.pop(state.DUPLICATES_NOTICE, None)
if notice is not None:
    getattr(st, notice[0])(notice[1])
engine = current_engine()
if engine is None:
    st.stop()
catalog = engine.catalog
if "pretrained" not in engine.approaches():
    st.info("Near-duplicates are found with the pretrained CNN's index, which this catalogue does not "
            "have yet: rebuild it on the Catalogue page.")
    st.stop()
if len(engine.items) < 2:
    st.info("This catalogue has a single item: nothing can be a duplicate of it.")
    st.stop()
editable = edit_rights.may_edit(catalog.name)
try:
    found = duplicates.duplicate_groups(str(catalog.root), engine.version, editable)
except (ValueError, OSError, imgsim.ImgsimError) as err:
    st.error("The duplicates could not be found: " + public_message(err))
    st.stop()
groups = found["groups"]
st.caption(f"{len(groups)} groups of near-duplicates among {found['n']} items · a pair is a copy when it "
           f"scores at least {found['threshold']:.3f}, a line calibrated on altered copies of this "
           "catalogue's own items · " + ("you may keep one of each group" if editable else "read-only"))
if not groups:
    st.success(f"No near-duplicates in {bold(catalog.name)}: every item is its own photo.")
elif not editable:
    st.info(f"{bold(catalog.name)} is read-only here: unlock it with its edit key on the Catalogue page to "
            "keep one item of a group and remove the others.")
for number, group in enumerate(groups, 1):
    st.subheader(f"Group {number}: {len(group)} items")
    ids = [m["id"] for m in group]
    for start in range(0, len(group), COLUMNS):
        columns = st.columns(COLUMNS)
        for column, member in zip(columns, group[start:start + COLUMNS]):
            with column:
                st.image(member["thumb"], caption=plain(shorten(member["name"], 40)), width="stretch")
                for line in duplicates.describe(member):
                    st.caption(line)
                if editable:
                    st.button("Keep this one", key=f"keep-{number}-{member['id']}", icon=":material/check:",
                              on_click=duplicates.keep_only, args=(catalog.name, str(catalog.root), ids,
                                                                   member["id"]),
                              help="Removes the group's other items from the catalogue.")
