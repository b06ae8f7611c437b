"""The classes kind draws no section on network, layer or unit pages: its documents feed the class
pages, planned by :mod:`sitegen.render.classes` (one page per class of each dataset)."""

TITLE = "Class pages"
TEMPLATE = ""  # no partial: see sitegen.render.classes and templates/class.html
