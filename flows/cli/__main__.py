"""``python -m spectral_surgery.flows.cli``: the same as the ``spectral-surgery`` console script."""

import sys

from spectral_surgery.flows.cli.app import main

sys.exit(main())
