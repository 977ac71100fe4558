"""The `stillroom` command line (typer + rich). The one place that wires every package."""
