"""videoq's worker: the Celery app, its tasks, the upstream client and the job store."""
