"""Data sources, the phantom generator, the on-disk cache and the datasets the loop reads."""
