"""Base utilities every layer may use: the error types and the file-writing rules.

Nothing here imports another part of the package.
"""
