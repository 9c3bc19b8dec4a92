"""nginx as a peer to compare netmux's http with: one process in the foreground, the
defaults but for its temporary paths and the types netmux gives the test files.

Used by tests/test_app_http_nginx.py and bench/peers/redbot_notes.py (which puts this
folder on ``sys.path``): standard library only, no pytest.
"""
from __future__ import annotations

import os
from typing import List


def nginx_argv(port: int, workdir: str, root: str) -> List[str]:
    """Write ``workdir/nginx.conf`` (serve ``root`` on 127.0.0.1:``port``, state and logs
    in ``workdir``) and return the command that runs nginx with it."""
    temp = "\n".join(f"  {kind}_temp_path {workdir}/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = os.path.join(workdir, "nginx.conf")
    with open(config, "w") as file:
        file.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
{temp}
  types {{ text/plain txt; text/html html; }}
  default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; server_tokens off; }}
}}
""")
    return ["nginx", "-p", workdir, "-c", config, "-e", f"{workdir}/error.log"]
