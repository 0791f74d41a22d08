"""Generative AI from scratch: reusable components for the course notebooks."""
