"""The exploration agent: tree + UCB (tree), working memory and full log (memory), decisions
and their validation (decision), what a policy sees (context), policies (policies/*), safe code
edits (codeedit) and the command line (``python -m agent init|ucb|decide|costs``: the table in agent.cli)."""
