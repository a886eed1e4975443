"""Entry point for ``python -m dogvae``."""

import sys

from dogvae.cli import main

sys.exit(main())
