"""Dispatch, the queue, the router (stage graph) and the RQ entry points."""
