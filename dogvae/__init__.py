"""dogvae: a convolutional VAE for dog photos, as a library, a CLI and a Streamlit app.

Importing the package is cheap: TensorFlow loads only with ``dogvae.model``, and
inside the functions that train or load models (``training.train_vae``,
``loaded_run.load_run``, ``runs.save_run``).
"""

__version__ = "0.1.0"
