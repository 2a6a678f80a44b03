"""Membership inference, update inference and privacy audits (model-agnostic)."""
