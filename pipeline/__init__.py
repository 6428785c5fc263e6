"""The workflow side: what joins the science package (``neuralgraph``) and the search (``agent``).

``neuralgraph`` imports nothing from ``agent`` or ``pipeline``; ``pipeline`` may import both.
Commands (``python -m pipeline``): ``train`` (:mod:`pipeline.train_job`), ``explorer``
(:mod:`pipeline.explorer`).
"""
