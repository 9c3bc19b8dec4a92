"""The ready-made servers of ``python -m netmux``: one module per server, each built on
what ``import netmux`` exports alone."""
