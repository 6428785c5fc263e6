"""neuralgraph: recover a network's connectivity W from its activity with a recurrent GNN.

Stages (one module each, each with a small CLI used by the Snakemake rules):
``config`` -> ``simulate`` -> ``training`` (with the editable ``train_loop``) -> ``analyze``.
"""
from pathlib import Path

__version__ = "0.1.0"

#: The packaged training loop (the editable module every exploration starts from); the one
#: owner of this path: training, the agent and the workflow's train job import it.
PACKAGED_LOOP = Path(__file__).resolve().with_name("train_loop.py")
