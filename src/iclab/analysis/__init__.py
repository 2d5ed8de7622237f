"""Analysis of what in-context learning computes: the dual form of linear attention (dual.py)."""
