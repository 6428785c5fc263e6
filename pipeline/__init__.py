"""The workflow side: what joins the science package (``neuralgraph``) and the search (``agent``).

``neuralgraph`` imports nothing from ``agent`` or ``pipeline``; ``pipeline`` may import both.
Commands (``python -m pipeline``): the table in :mod:`pipeline.cli` (``train``, the train command
users meet, is :mod:`pipeline.train_job`).
"""
