"""Entry point for ``python -m dogvae``."""

import sys

from dogvae.cli import main, mute_native_stderr

mute_native_stderr()
sys.exit(main())
