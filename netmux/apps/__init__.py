"""Ready-made servers built on netmux's public API, one module each; the command line finds them here."""
