"""Folding input-dependent attention into what a chip core can hold (DESIGN.md section 4)."""
