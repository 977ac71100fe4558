"""stillroom: notice repeated tasks, distill small local models, act only where proven right."""

__version__ = "0.1.0"
