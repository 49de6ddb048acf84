"""One module per command; cli/app.py registers them on the Typer app."""
