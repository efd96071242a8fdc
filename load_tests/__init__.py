"""Load and benchmark tooling: a fast mock OpenAI-wire upstream, a bare pass-through proxy, and the benchmark."""
