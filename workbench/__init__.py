"""Workbench's composition root: settings, URLs, ASGI, Celery, and the low parts every app uses."""

from workbench.celery import app as celery_app

__all__ = ["celery_app"]
