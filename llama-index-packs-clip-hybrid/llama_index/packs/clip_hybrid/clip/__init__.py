"""CLIP: the model that puts text and images in one vector space, loaded lazily and run fast."""
