"""Dispatch (intent -> run -> first job), the queue, the router (stage graph), RQ entry points,
approvals and scheduled checks."""
