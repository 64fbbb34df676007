"""Model runners: load a model once per process, then narrow numpy-in / numpy-out calls. No HTTP, Celery or S3."""
