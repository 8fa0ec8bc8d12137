"""Data: the offline scenes benchmark (`scenes`) and dataset loading and transforms (`loading`)."""
