"""dogvae: play with a convolutional VAE trained on dog photos.

Page config and navigation only; each page lives in pages/.
"""

import streamlit as st

from dogvae import ui

st.set_page_config(page_title="dogvae", page_icon="🐕", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/data.py", title="Data", icon="🗂️", default=True),
        st.Page("pages/train.py", title="Train", icon="🏋️"),
        st.Page("pages/generate.py", title="Generate", icon="🎲"),
        st.Page("pages/interpolate.py", title="Interpolate", icon="🔀"),
        st.Page("pages/models.py", title="Models", icon="💾"),
    ]
)
try:
    navigation.run()
finally:
    # TensorFlow and the default model load in the background, once per server, and only
    # once this first page is out: importing TensorFlow holds the interpreter for seconds,
    # which would hold up the page. In a finally: a page that ends with st.stop() (the
    # Data page before any data, a new user's first page) ends the script here.
    ui.warm_up()
