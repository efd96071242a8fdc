"""An AI governance gateway: one OpenAI-compatible endpoint in front of every model, with one pipeline."""

__version__ = "0.1.0"
