"""FastAPI host example for smartchat_core: WhatsApp Cloud API webhook, REST,
WebSocket rooms, monitors in the lifespan and a live dashboard.

``uvicorn examples.fastapi_app.app:app`` serves it (configured by environment,
see :mod:`examples.fastapi_app.app`); ``python -m examples.fastapi_app.demo``
runs it with simulated executives and customers.
"""
