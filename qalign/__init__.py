"""qalign: align LLMs for retrieval-augmented QA on top of LLaMA-Factory."""

__version__ = "0.1.0"
