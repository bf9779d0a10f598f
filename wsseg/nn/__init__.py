"""Building blocks methods share: the backbone factory and the one upsampling rule."""
