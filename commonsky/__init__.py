"""CommonSky: share a real-time picture of the sky between independent parties, under agreements."""

__version__ = "0.1.0"
