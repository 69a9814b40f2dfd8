"""CURVE keys, roles and API keys: who may connect and what each caller may do."""
