"""Example tools written with the tool SDK (:mod:`bus.runtime.catalogue`): the demo's email and
ticket tools. The runtime never imports them: a tool host serves ``bus.tools:complaints``
and registers their schemas, as it would any user's catalogue."""

from bus.runtime.catalogue import Catalogue
from bus.tools.mail import send_email
from bus.tools.tickets import create_ticket

complaints = Catalogue("complaints", [send_email, create_ticket])

__all__ = ["complaints", "create_ticket", "send_email"]
