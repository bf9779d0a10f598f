"""wsseg.report."""
