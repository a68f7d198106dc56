"""inferbench: benchmark Transformer inference across runtimes, precisions and machines."""

__version__ = "0.1.0"
