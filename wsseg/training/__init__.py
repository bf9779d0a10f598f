"""wsseg.training."""
