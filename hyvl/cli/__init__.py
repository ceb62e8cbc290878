"""Command-line interface: one thin module per verb (see hyvl.cli.main)."""
