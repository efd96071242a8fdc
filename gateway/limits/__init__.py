"""Rate limits, budgets and the pricing table; Redis and in-process backends."""
