"""The API's routes by area; each module's `routes(api)` lists its own (http/api.py
composes them)."""
