"""Plumbing shared by every stage: paths and files (fs), commands (cli), config checks (checks)."""
