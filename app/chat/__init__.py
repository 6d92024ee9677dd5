"""Grounded chat: answers from the caller's visible passages, with citations and sessions."""
