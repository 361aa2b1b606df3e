"""The web console (``claimcheck ui``): a browser view of the deployment's workflows."""

from bus.operations.console.app import create_app

__all__ = ["create_app"]
