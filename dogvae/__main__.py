"""Entry point for ``python -m dogvae``."""

import sys

from dogvae.cli import main
from dogvae.terminal import mute_native_stderr

mute_native_stderr()
sys.exit(main())
