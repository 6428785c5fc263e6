"""neuralgraph: recover a network's connectivity W from its activity with a recurrent GNN.

Stages (one module each, each with a small CLI used by the Snakemake rules):
``config`` -> ``simulate`` -> ``training`` (with the editable ``train_loop``) -> ``analyze``.
"""
__version__ = "0.1.0"
