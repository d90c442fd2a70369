"""Decontamination against eval sets: the eval sets, the matching stage, its positive controls and its report."""
