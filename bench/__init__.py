"""videoq's benchmark: videoq against the seed's blocking loop and one asyncio poller.

``python -m bench`` runs it; see docs/performance.md.
"""
