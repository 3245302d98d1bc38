"""The ``spectral-surgery`` command line: :func:`main` (the console script) and ``python -m
spectral_surgery.flows.cli``.

Modules: :mod:`~flows.cli.app` (the parser and :func:`main`), one module per group of sub-commands
(:mod:`~flows.cli.edit_cmd`, :mod:`~flows.cli.adapters`, :mod:`~flows.cli.run`, :mod:`~flows.cli.demo_cmd`) and
:mod:`~flows.cli.common` (where the registry is, errors, output). Commands call flows, the registry API and the
dashboard's public entry points; nothing below imports this package.
"""

from spectral_surgery.flows.cli.app import main

__all__ = ["main"]
