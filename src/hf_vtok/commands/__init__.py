"""The ``hf-vtok`` sub-commands (application layer): each module has ``add_arguments(parser)`` and ``run(args)``."""
