"""imgsim: image similarity search for product catalogues.

The engine behind the Streamlit app and the ``python -m imgsim`` command line. It never imports
streamlit, and importing it does not load TensorFlow: models load when first used.
"""

__version__ = "0.1.0"
