"""``python -m neuronscope ...``: the same entry point as the ``neuronscope`` console script."""

from neuronscope.cli import main

if __name__ == "__main__":
    main()
