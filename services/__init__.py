"""StyleLoop's deployable services, one package each (`python -m services.<name>`)."""
