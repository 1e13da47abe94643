"""Benchmarks behind `manage.py bench SCENARIO`; each builds its data in its own database."""
