"""Trial tests for moxtw."""
