"""Tokens, secrets encryption and the agent-URL (SSRF) policy: the box's security primitives."""
