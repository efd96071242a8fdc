"""PII protection: Presidio analysis off the event loop, masking and reversible pseudonymisation."""
