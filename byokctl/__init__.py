"""byokctl: administration CLI for bring-your-own-AI-key platforms, with a local encrypted vault."""

__version__ = "0.1.0"
