"""Scoring predictions against gold answer aliases: SubEM, EM, F1 (SQuAD / FlashRAG conventions)."""
