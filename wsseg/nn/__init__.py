"""Building blocks methods share: the backbone factory, the one upsampling rule, GMIC/GLAM parts, projections."""
