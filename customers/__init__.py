"""Customers: who a person is across channels, their consent, and their one timeline."""
