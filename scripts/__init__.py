"""Maintainer scripts of the course, importable for the tests (``from scripts import train_lora``).

Each one also runs as ``python scripts/<name>.py``; they import ``lora_helpers``, which the course
setup installs (editable) in the virtual environment.
"""
