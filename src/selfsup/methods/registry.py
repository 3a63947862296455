"""The method registry: ``--method NAME`` on the command line looks names up here."""

from selfsup.registry import Registry

METHODS: Registry = Registry("method")
