"""imgsim's Streamlit app: the frame around the pages.

Page config, logo, the shared sidebar and ``st.navigation`` over ``app_pages/``; nothing else.
The sidebar is drawn here, once per run, before the chosen page runs, so its values persist
from page to page. An :class:`imgsim.ImgsimError` that a page does not handle itself is shown
here as a plain message, never as a traceback.
"""

import streamlit as st

import imgsim
from app_support import ASSETS
from app_support.sidebar import draw_sidebar
from app_support.uploads import public_message

# A local file, served by the app itself: a `:material/...:` page icon makes every visitor's
# browser fetch the favicon from fonts.gstatic.com.
st.set_page_config(page_title="imgsim · visual search", page_icon=str(ASSETS / "icon.png"), layout="wide")
st.logo(str(ASSETS / "logo.svg"))
# Phone-first layout (two result tiles to a row, the query beside its caption): local CSS only.
st.html(f"<style>{(ASSETS / 'app.css').read_text()}</style>")
navigation = st.navigation([
    st.Page("app_pages/search.py", title="Search", icon=":material/image_search:", default=True),
    st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("app_pages/reconstructions.py", title="Reconstructions", icon=":material/auto_fix_high:"),
    st.Page("app_pages/catalogue.py", title="Catalogue", icon=":material/inventory_2:"),
    st.Page("app_pages/duplicates.py", title="Duplicates", icon=":material/content_copy:"),
    st.Page("app_pages/evaluation.py", title="Evaluation", icon=":material/monitoring:"),
])
try:
    draw_sidebar()
    navigation.run()
except imgsim.ImgsimError as err:
    st.error(public_message(err))  # plain text, and no server path
