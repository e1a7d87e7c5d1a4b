"""asa_deploy: Advanced Spatial Attention SNNs from event cameras to SynSense chips."""

__version__ = "0.1.0"
