"""The Django project of Cohort: settings, URLs, the Celery app, API plumbing and access control."""

from .celery import app as celery_app

__all__ = ("celery_app",)
