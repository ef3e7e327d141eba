"""The FastAPI app: JSON API, reader and admin pages, webhooks."""
