"""The workflow side: what joins the science package (``neuralgraph``) and the search (``agent``)
for the Snakemake workflow. ``neuralgraph`` imports nothing from here or from ``agent``."""
