"""Streamlit components of the app: each a folder with its JavaScript, CSS and Python."""
