"""The claims ledger: every quantitative claim of the five write-ups, the experiment that tests it, a verdict.

- :mod:`~geoformer.claims.rules`: the verdict machinery (intervals, the four claim forms, sequential looks).
- :mod:`~geoformer.claims.registry`: :class:`Row` (measure / decide / describe), origins, the row registry.
- :mod:`~geoformer.claims.ledger`: running, merging, rendering, staleness (``geoformer claims``).
- one module of rows per write-up: ``seed000`` ... ``seed004``, and ``arena`` (the baseline's own claims).
"""

from geoformer.claims.registry import ORIGINS, Row, Untestable, all_rows, register, untestable

__all__ = ["ORIGINS", "Row", "Untestable", "all_rows", "register", "untestable"]
