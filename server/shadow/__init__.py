"""A candidate version in shadow: it scores a copy of the primary's traffic off the response
path (``scorer.py``), its live quality is compared with the primary's on the same labelled rows
(``compare.py``), and it is promoted by an admin call or an automatic rule (``extension.py``,
``routes.py``); the routing itself is ``server.routing``."""
