"""Sub-commands of the ``normdyn`` CLI; each module has ``add_parser`` and ``run``."""
