"""Workflow-side code that joins the science package (``neuralgraph``) and the agent (``agent``).

``neuralgraph`` imports nothing from ``agent`` or ``pipeline``; ``pipeline`` may import both.
Commands: ``python -m pipeline explorer --results results/<exp>`` (see :mod:`pipeline.explorer`).
"""
