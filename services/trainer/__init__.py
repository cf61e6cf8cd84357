"""The trainer: learns from what shoppers reject (see README.md)."""
