"""neuronscope."""
