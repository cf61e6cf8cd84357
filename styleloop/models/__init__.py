"""Model preparation: weights of every preset, exported the same way (`styleloop models`)."""
