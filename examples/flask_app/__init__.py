"""Flask host example for smartchat_core, through the blocking ``SmartChat``:
WhatsApp Cloud API webhook, REST, Server-Sent Events, and the monitors in the
desk's event loop for the app's lifetime.

``flask --app examples.flask_app.app run`` serves it (Flask calls
:func:`examples.flask_app.app.create_app`, configured by environment); see the
README next to this file.
"""
