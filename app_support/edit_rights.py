"""Who may change a catalogue from the browser: the holder of its edit key.

A build from the app issues a key (:func:`imgsim.issue_edit_key`); the session keeps it, and a
link carrying ``?catalog=NAME&key=KEY`` (or the key typed into the Catalogue page) gives it to a
fresh session, after a reload or in another browser. Every change is allowed only after the
key is checked against the catalogue's stored hash, so a key of another catalogue, a wrong key,
or none opens nothing; operator catalogues (the demo) have no key and stay read-only.
"""

from __future__ import annotations

import urllib.parse

import streamlit as st

import imgsim
from app_support import state

CATALOG_PARAM, KEY_PARAM = "catalog", "key"


def may_edit(name: str) -> bool:
    """Whether this session holds the current edit key of catalogue ``name``."""
    key = state.edit_keys().get(name)
    return key is not None and imgsim.check_edit_key(imgsim.default_catalog_path(name), key)


def unlock(name: str, key: str) -> bool:
    """Checks ``key`` for catalogue ``name``; keeps it in the session (and the URL) when it fits.

    Returns:
        True when the key opens the catalogue.
    """
    key = key.strip()
    try:
        name = imgsim.valid_catalog_name(name)
    except ValueError:
        return False
    if not imgsim.check_edit_key(imgsim.default_catalog_path(name), key):
        return False
    grant(name, key)
    return True


def grant(name: str, key: str) -> None:
    """Keeps catalogue ``name``'s edit key in the session and in the page's URL (a reload keeps it)."""
    state.edit_keys()[name] = key
    st.query_params[CATALOG_PARAM] = name
    st.query_params[KEY_PARAM] = key


def read_link() -> None:
    """Takes the edit key of a link (``?catalog=NAME&key=KEY``) once per session and link.

    A key that opens its catalogue picks that catalogue in the sidebar; one that does not leaves
    a message for the Catalogue page.
    """
    name, key = st.query_params.get(CATALOG_PARAM), st.query_params.get(KEY_PARAM)
    if not name or not key or st.session_state.get(state.LINK_SEEN) == (name, key):
        return
    st.session_state[state.LINK_SEEN] = (name, key)
    if unlock(name, key):
        st.session_state[state.PENDING_CATALOG] = name
    else:
        state.notify("error", "The edit key of that link does not open a catalogue here; the catalogues "
                              "stay read-only.")


def link(name: str, key: str) -> str:
    """The relative link to the Catalogue page that carries catalogue ``name``'s edit key."""
    return "catalogue?" + urllib.parse.urlencode({CATALOG_PARAM: name, KEY_PARAM: key})
