"""``python -m neuronscope ...``: the same entry point as the ``neuronscope`` console script.

Also what ``accelerate launch -m neuronscope ...`` runs in every process.
"""

from neuronscope.cli import main

main()
