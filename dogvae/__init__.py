"""dogvae: a convolutional VAE for dog photos, as a library, a CLI and a Streamlit app.

Importing the package is cheap: TensorFlow loads only with ``dogvae.model``,
``dogvae.training`` or ``dogvae.runs``.
"""

__version__ = "0.1.0"
