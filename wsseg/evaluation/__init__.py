"""wsseg.evaluation."""
