"""Symbolic feedback: certificates and their conversion to token-level rewards."""

from rlsf.feedback.certificate import Certificate, Span

__all__ = ["Certificate", "Span"]
