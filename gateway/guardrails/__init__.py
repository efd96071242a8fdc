"""Guardrails: text checks on prompts and answers (streams included), behind one small contract (base.py)."""
