"""refnet.weights_import: model files (bytes) -> refnet Graph. Knows nothing of execution.

Every parser reads through a bounded reader and raises refnet.errors types on bad input.
"""
