"""The captioner service: fashion captions (and their attributes) of product photos."""
