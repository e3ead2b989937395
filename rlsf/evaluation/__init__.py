"""Figures over certificates, with no model in sight: pass@k, the selectors that pick one of k
samples (majority vote, rerank, first), answer-collapse and diversity measures. The evaluate
stage and the training log use them.
"""
