"""Folding input-dependent attention into what a chip core can hold (docs/design.md section 4)."""
