"""What the app's pages share: the engine cache, session state, widgets and text helpers.

It lives outside ``app_pages/`` so that Streamlit never mistakes a helper for a page, and it
uses only imgsim's public facade (``import imgsim``), as the pages do.
"""

from pathlib import Path

#: Static files the app shows (logo, page icon).
ASSETS = Path(__file__).resolve().parents[1] / "assets"
